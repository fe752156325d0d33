"""Who may take a staff action: the one place every admin page and staff API view asks.

Each caller names its action (``challenge.resolve``, ``payout_job.pause``, ...), so finer
rules (groups of resolvers, treasury, operators) change this function, not the views.
"""

from typing import Any

from django.core.exceptions import PermissionDenied


def staff_action_allowed(*, user: Any, action: str) -> bool:
    """Whether ``user`` may take the staff ``action``: today any active staff member."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def staff_action_check(*, user: Any, action: str) -> None:
    """Raise ``PermissionDenied`` (a 403 in the admin and the API) unless allowed."""
    if not staff_action_allowed(user=user, action=action):
        raise PermissionDenied(f"You may not take the action {action}.")
