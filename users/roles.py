"""Staff roles: Django groups holding the permissions each kind of staff work needs.

Every staff endpoint, admin page and admin action names a staff action, and each action needs
one Django permission (``core.permissions``); a staff user can do exactly what their groups
(or their own permissions) grant, and a superuser everything.
The groups are created by ``users/migrations/0001_staff_roles.py`` with these permissions;
``staff_role_grant`` re-creates one that is missing (a flushed test database).
"""

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import transaction

# role -> "app_label.codename" permissions. Looking is granted with each role's own work.
STAFF_ROLES: dict[str, tuple[str, ...]] = {
    # Decide challenges: resolve (start the payout) or cancel (refund every stake).
    "resolvers": (
        "challenges.resolve_challenge",
        "challenges.cancel_challenge",
        "challenges.view_challenge",
        "challenges.view_stake",
        "payouts.view_payoutjob",
    ),
    # Put money into users' wallets (capped per deposit and per day; never their own).
    "treasury": (
        "ledger.add_deposit",
        "ledger.view_deposit",
        "ledger.view_account",
        "ledger.view_transfer",
    ),
    # Run the payout machinery: job controls and the dead-letter queue.
    "operators": (
        "payouts.view_payoutjob",
        "payouts.view_payoutentry",
        "payouts.pause_payoutjob",
        "payouts.resume_payoutjob",
        "payouts.cancel_payoutjob",
        "payouts.retry_payoutjob",
        "core.view_deadletter",
        "core.replay_deadletter",
        "core.view_auditentry",
        "challenges.view_challenge",
        "notifications.view_notification",
        "notifications.change_notification",
    ),
}


def staff_role_grant(*, user: Any, role: str) -> Group:
    """Make ``user`` staff and a member of ``role``'s group (created with its permissions if it
    is missing). Idempotent."""
    perms = STAFF_ROLES[role]
    with transaction.atomic():
        group, created = Group.objects.get_or_create(name=role)
        if created:
            for perm in perms:
                app_label, codename = perm.split(".")
                group.permissions.add(
                    Permission.objects.get(content_type__app_label=app_label, codename=codename)
                )
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.add(group)
    return group
