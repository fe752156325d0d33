"""The staff user a proof run acts as."""

from users.services import User, user_create


def proof_staff(username: str) -> User:
    """The staff user ``username``, created on first use and reused by later runs.

    Reused, not one per run: every active staff member is notified of each expired challenge,
    so a staff count growing with every run would make the sweep figures drift."""
    return User.objects.filter(username=username).first() or user_create(
        username=username,
        password="unused",  # noqa: S106 - nobody logs in as this user
        is_staff=True,
        validate=False,
    )
