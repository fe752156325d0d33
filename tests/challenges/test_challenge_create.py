from datetime import timedelta

import pytest
from django.utils import timezone

from challenges.models import Challenge
from challenges.services import challenge_create
from core.errors import InvalidInput
from ledger.models import Account

pytestmark = pytest.mark.django_db


def test_a_new_challenge_is_pending_with_an_empty_escrow_of_its_own(make_user):
    creator, rival = make_user(), make_user()
    due = timezone.now() + timedelta(days=1)

    challenge = challenge_create(
        creator=creator,
        title="  Marathon under 4h  ",
        due_date=due,
        description="Berlin",
        category="sport",
        challenged_username=rival.username,
    )

    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.PENDING
    assert (challenge.challenger, challenge.challenged) == (creator, rival)
    assert challenge.title == "Marathon under 4h"
    assert challenge.due_date == due
    assert (challenge.yes_total, challenge.no_total, challenge.yes_count, challenge.no_count) == (
        0,
        0,
        0,
        0,
    )
    assert challenge.escrow.kind == Account.Kind.CHALLENGE_ESCROW
    assert challenge.escrow.balance == 0
    other = challenge_create(creator=creator, title="Again", due_date=due)
    assert other.escrow_id != challenge.escrow_id


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"due_date": timedelta(0)}, "due_date_in_past"),
        ({"due_date": -timedelta(minutes=1)}, "due_date_in_past"),
        ({"title": "   "}, "invalid_title"),
        ({"challenged_username": "nobody"}, "user_not_found"),
        ({"challenged_username": "me"}, "cannot_challenge_self"),
    ],
)
def test_bad_challenges_are_refused_and_create_nothing(make_user, changes, code):
    creator = make_user("me")
    now = timezone.now()
    args = {"title": "T", "due_date": timedelta(hours=1)} | changes
    args["due_date"] = now + args["due_date"]
    accounts = Account.objects.count()

    with pytest.raises(InvalidInput) as error:
        challenge_create(creator=creator, **args)

    assert error.value.code == code
    assert not Challenge.objects.exists()
    assert Account.objects.count() == accounts
