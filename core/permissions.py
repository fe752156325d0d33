"""Who may take a staff action: the one place every admin page, admin action and staff API
view asks.

Each caller names its action (``challenge.resolve``, ``payout_job.pause``, ...); this module
says which Django permission the action needs. The permissions are granted by the staff roles,
groups that ``users/migrations/0001_staff_roles.py`` creates (resolvers, treasury, operators;
see ``users/roles.py``); a superuser holds every permission. The business rules that bind
everyone, superusers included (no conflict of interest, no deposit to oneself), live in the
services, not here.
"""

from typing import Any

from django.core.exceptions import PermissionDenied

# action -> "app_label.codename" it needs; None: any active staff member.
STAFF_ACTION_PERMISSIONS: dict[str, str | None] = {
    "staff": None,
    # The console's overview: counts and figures, no person's data.
    "console.view": None,
    "challenge.resolve": "challenges.resolve_challenge",
    "challenge.cancel": "challenges.cancel_challenge",
    # Staff notes on a challenge are the deciders' working notes.
    "challenge.notes": "challenges.resolve_challenge",
    "wallet.deposit": "ledger.add_deposit",
    "payout_job.view": "payouts.view_payoutjob",
    "payout_job.pause": "payouts.pause_payoutjob",
    "payout_job.resume": "payouts.resume_payoutjob",
    "payout_job.cancel": "payouts.cancel_payoutjob",
    "payout_job.retry-failed": "payouts.retry_payoutjob",
    "dead_letter.view": "core.view_deadletter",
    "dead_letter.replay": "core.replay_deadletter",
    "notification.deliver": "notifications.change_notification",
}


def staff_action_allowed(*, user: Any, action: str) -> bool:
    """Whether ``user`` may take the staff ``action``: an active staff member holding the
    action's permission. An action this module does not know is refused (least privilege)."""
    if not (user is not None and user.is_authenticated and user.is_active and user.is_staff):
        return False
    if action not in STAFF_ACTION_PERMISSIONS:
        return False
    perm = STAFF_ACTION_PERMISSIONS[action]
    return perm is None or user.has_perm(perm)


def staff_action_check(*, user: Any, action: str) -> None:
    """Raise ``PermissionDenied`` (a 403 in the admin and the API) unless allowed."""
    if not staff_action_allowed(user=user, action=action):
        raise PermissionDenied(f"You may not take the action {action}.")
