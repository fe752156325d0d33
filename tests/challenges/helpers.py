"""Scenario builders shared by the challenge tests: everything goes through the real services."""

from datetime import timedelta

from django.utils import timezone

from challenges.models import Challenge
from challenges.services import challenge_create, stake_place


def open_challenge(creator, *, due_in: timedelta = timedelta(hours=2), challenged=None, **fields):
    return challenge_create(
        creator=creator,
        title=fields.pop("title", "Will it rain tomorrow?"),
        due_date=timezone.now() + due_in,
        challenged_username=challenged.username if challenged else None,
        **fields,
    )


def active_challenge(make_user, *, due_in: timedelta = timedelta(hours=2), stakers: int = 0):
    """A challenge with the challenger on ``yes``, the challenged user on ``no`` and ``stakers``
    more users alternating sides; returns the challenge (reloaded) and all participants."""
    challenger = make_user(balance=1_000)
    challenged = make_user(balance=1_000)
    challenge = open_challenge(challenger, due_in=due_in, challenged=challenged)
    stake_place(user=challenger, challenge_id=challenge.pk, side="yes", amount=100)
    stake_place(user=challenged, challenge_id=challenge.pk, side="no", amount=100)
    others = []
    for i in range(stakers):
        user = make_user(balance=10)
        stake_place(user=user, challenge_id=challenge.pk, side="yes" if i % 2 else "no", amount=10)
        others.append(user)
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.ACTIVE
    return challenge, [challenger, challenged, *others]
