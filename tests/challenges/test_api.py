from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from challenges.models import Challenge, Stake
from challenges.services import challenges_sweep_deadlines, stake_place
from ledger.models import Transfer
from ledger.selectors import wallet_get
from tests.challenges.helpers import active_challenge, open_challenge

pytestmark = pytest.mark.django_db


def _future(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def test_create_then_read_a_challenge(make_user, client_for):
    creator, rival = make_user(), make_user("rival")
    client = client_for(creator)

    response = client.post(
        "/api/challenges/",
        {
            "title": "Chess, best of three",
            "due_date": _future(days=2),
            "category": "games",
            "challenged_username": "rival",
            # read-only fields are ignored, never written
            "status": "completed",
            "yes_total": 10**6,
            "challenger": rival.pk,
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert body["challenger"] == {"id": creator.pk, "username": creator.username}
    assert body["challenged"] == {"id": rival.pk, "username": "rival"}
    assert (body["yes_total"], body["no_total"], body["yes_count"], body["no_count"]) == (
        0,
        0,
        0,
        0,
    )
    detail = client.get(f"/api/challenges/{body['id']}/")
    assert detail.status_code == 200
    # The detail adds the evidence, the resolution note and the payout row (none yet)
    assert detail.json() == {**body, "evidence": "", "resolution_note": "", "payout": None}


def test_detail_shows_per_side_totals_and_counts(make_user, client_for):
    challenge, players = active_challenge(make_user, stakers=3)

    body = client_for(players[0]).get(f"/api/challenges/{challenge.pk}/").json()

    assert body["status"] == "active"
    assert (body["yes_total"], body["yes_count"]) == (110, 2)
    assert (body["no_total"], body["no_count"]) == (120, 3)


def test_list_filters_by_status_newest_first(make_user, client_for):
    user = make_user()
    pending = open_challenge(user)
    active, _ = active_challenge(make_user)
    newest = open_challenge(user)
    client = client_for(user)

    everything = client.get("/api/challenges/").json()
    only_pending = client.get("/api/challenges/?status=pending").json()
    only_active = client.get("/api/challenges/?status=active").json()

    assert [c["id"] for c in everything["results"]] == [newest.pk, active.pk, pending.pk]
    assert (everything["next"], everything["previous"]) == (None, None)
    assert [c["id"] for c in only_pending["results"]] == [newest.pk, pending.pk]
    assert [c["id"] for c in only_active["results"]] == [active.pk]
    bad = client.get("/api/challenges/?status=bogus")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_status")


def test_list_pages_by_cursor_and_counts_nothing(make_user, client_for, settings):
    # Given five challenges
    settings.CHALLENGE_OPEN_LIMIT = 5
    user = make_user()
    made = [open_challenge(user) for _ in range(5)]
    client = client_for(user)
    # When a client follows the list two at a time
    seen, url = [], "/api/challenges/?page_size=2"
    with CaptureQueriesContext(connection) as captured:
        while url:
            page = client.get(url).json()
            seen += [c["id"] for c in page["results"]]
            url = page["next"]
    # Then it sees each once, newest first, and nothing counted the challenges: a page costs
    # the same however many there are before it
    assert seen == [c.pk for c in reversed(made)]
    assert "count" not in page
    assert [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()] == []
    # And a cursor the API never gave is a clean 404
    bad = client.get("/api/challenges/?cursor=made-up")
    assert (bad.status_code, bad.json()["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"due_date": "past"}, "due_date_in_past"),
        ({"due_date": "now"}, "due_date_in_past"),
        ({"due_date": "tomorrow-ish"}, "invalid_input"),
        ({"title": ""}, "invalid_input"),
        ({"title": "x" * 201}, "invalid_input"),
        ({"challenged_username": "ghost"}, "user_not_found"),
        ({"challenged_username": "me"}, "cannot_challenge_self"),
    ],
)
def test_bad_challenge_input_is_a_4xx_with_a_code_and_creates_nothing(
    make_user, client_for, payload, code
):
    client = client_for(make_user("me"))
    data = {"title": "T", "due_date": _future(hours=1)} | payload
    if data["due_date"] == "past":
        data["due_date"] = _future(minutes=-1)
    elif data["due_date"] == "now":
        data["due_date"] = timezone.now().isoformat()

    response = client.post("/api/challenges/", data, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not Challenge.objects.exists()


def test_stake_through_the_api(make_user, client_for):
    creator, staker = make_user(balance=100), make_user(balance=100)
    challenge = open_challenge(creator)
    stake_place(user=creator, challenge_id=challenge.pk, side="yes", amount=40)

    response = client_for(staker).post(
        f"/api/challenges/{challenge.pk}/stakes/", {"side": "no", "amount": 25}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["stake"]["side"] == "no"
    assert body["stake"]["amount"] == 25
    assert body["stake"]["created_at"]
    assert body["challenge"]["status"] == "active"
    assert (body["challenge"]["no_total"], body["challenge"]["no_count"]) == (25, 1)
    assert wallet_get(user_id=staker.pk).balance == 75


def _state(challenge, user) -> tuple:
    challenge.refresh_from_db()
    return (
        challenge.status,
        challenge.yes_total,
        challenge.no_total,
        challenge.yes_count,
        challenge.no_count,
        challenge.escrow.balance,
        wallet_get(user_id=user.pk).balance,
        Transfer.objects.count(),
        Stake.objects.count(),
    )


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"side": "maybe", "amount": 10}, 400, "invalid_side"),
        ({"side": None, "amount": 10}, 400, "invalid_input"),
        ({"amount": 10}, 400, "invalid_input"),
        ({"side": "yes", "amount": 0}, 400, "invalid_amount"),
        ({"side": "yes", "amount": -10}, 400, "invalid_amount"),
        ({"side": "yes", "amount": 10.0}, 400, "invalid_amount"),
        ({"side": "yes", "amount": 1.5}, 400, "invalid_amount"),
        ({"side": "yes", "amount": "10"}, 400, "invalid_amount"),
        ({"side": "yes", "amount": None}, 400, "invalid_amount"),
        ({"side": "yes", "amount": 101}, 400, "insufficient_funds"),
        ({"side": "yes", "amount": 10**20}, 400, "invalid_amount"),
    ],
)
def test_bad_stakes_are_4xx_with_a_code_and_change_nothing(
    make_user, client_for, payload, status, code
):
    staker = make_user(balance=100)
    challenge = open_challenge(make_user())
    before = _state(challenge, staker)

    response = client_for(staker).post(
        f"/api/challenges/{challenge.pk}/stakes/", payload, format="json"
    )

    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert _state(challenge, staker) == before


def test_staking_after_the_deadline_twice_or_on_a_closed_or_missing_challenge(
    make_user, client_for
):
    staker = make_user(balance=100)
    client = client_for(staker)
    challenge, _ = active_challenge(make_user, due_in=timedelta(minutes=10))
    url = f"/api/challenges/{challenge.pk}/stakes/"
    assert client.post(url, {"side": "yes", "amount": 10}, format="json").status_code == 201
    late = make_user(balance=100)
    before = _state(challenge, staker)

    second = client.post(url, {"side": "no", "amount": 10}, format="json")
    assert (second.status_code, second.json()["code"]) == (409, "already_staked")

    with time_machine.travel(challenge.due_date + timedelta(seconds=1), tick=False):
        after_deadline = client_for(late).post(url, {"side": "yes", "amount": 10}, format="json")
        challenges_sweep_deadlines()
    assert (after_deadline.status_code, after_deadline.json()["code"]) == (
        409,
        "challenge_not_open",
    )
    closed = client_for(late).post(url, {"side": "yes", "amount": 10}, format="json")
    assert (closed.status_code, closed.json()["code"]) == (409, "challenge_not_open")
    missing = client.post(
        "/api/challenges/999999/stakes/", {"side": "yes", "amount": 1}, format="json"
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "challenge_not_found")
    assert _state(challenge, staker)[1:] == before[1:]
    assert wallet_get(user_id=late.pk).balance == 100


def test_endpoints_need_a_logged_in_user(client_for):
    anonymous = client_for()
    assert anonymous.get("/api/challenges/").status_code in {401, 403}
    assert anonymous.post("/api/challenges/1/stakes/", {}).status_code in {401, 403}


def test_unknown_challenge_is_404_json(make_user, client_for):
    response = client_for(make_user()).get("/api/challenges/424242/")
    assert (response.status_code, response.json()["code"]) == (404, "challenge_not_found")
