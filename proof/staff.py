"""The staff user a proof run acts as."""

from users.roles import STAFF_ROLES, staff_role_grant
from users.services import User, user_create


def proof_staff(username: str) -> User:
    """The staff user ``username``, created on first use and reused by later runs, holding
    every staff role (it resolves, cancels and steers jobs; it never stakes, so no conflict of
    interest stops it).

    Reused, not one per run: every active staff member is notified of each expired challenge,
    so a staff count growing with every run would make the sweep figures drift."""
    user = User.objects.filter(username=username).first() or user_create(
        username=username,
        password="unused",  # noqa: S106 - nobody logs in as this user
        is_staff=True,
        validate=False,
    )
    for role in STAFF_ROLES:
        staff_role_grant(user=user, role=role)
    return user
