"""``core.api.serialized``: one renderer per serializer class gives what DRF's ``.data`` gives,
from any number of threads at once."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from challenges.api import ChallengeOutputSerializer, StakeOutputSerializer
from challenges.models import Challenge
from challenges.services import stake_place
from core.api import serialized
from tests.challenges.helpers import open_challenge


@pytest.mark.django_db
def test_it_renders_what_the_serializer_renders_from_many_threads(make_user):
    # Given challenges with and without a named opponent, each with a stake
    named = open_challenge(make_user(balance=100), challenged=make_user(), title="Named")
    open_one = open_challenge(make_user(balance=100), title="Open")
    stakes = [
        stake_place(user=c.challenger, challenge_id=c.pk, side="yes", amount=10)
        for c in (named, open_one)
    ]
    challenges = [Challenge.objects.get(pk=c.pk) for c in (named, open_one)]
    expected = [ChallengeOutputSerializer(c).data for c in challenges]
    assert expected[0]["challenged"] is not None
    assert expected[1]["challenged"] is None
    # When both are rendered many times over, from eight threads sharing the renderers
    with ThreadPoolExecutor(8) as pool:
        rendered = list(
            pool.map(lambda n: serialized(ChallengeOutputSerializer, challenges[n % 2]), range(200))
        )
    # Then each rendering is the serializer's own
    assert all(r == expected[n % 2] for n, r in enumerate(rendered))
    assert [serialized(StakeOutputSerializer, s) for s in stakes] == [
        StakeOutputSerializer(s).data for s in stakes
    ]
