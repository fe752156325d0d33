"""Consent: the challenged user may decline (cancel and refund everything); nobody may keep
more than CHALLENGE_OPEN_LIMIT challenges open."""

from datetime import timedelta

import pytest
from django.utils import timezone

from challenges.models import Challenge
from core.models import AuditEntry
from ledger.selectors import wallet_get
from notifications.models import Notification
from payouts.models import PayoutJob
from tests.challenges.helpers import active_challenge, open_challenge
from tests.payouts.helpers import run_job_inline

pytestmark = pytest.mark.django_db


def test_the_challenged_user_declines_and_every_stake_is_refunded(
    client_for, make_user, django_capture_on_commit_callbacks
):
    # Given an active challenge with stakes on both sides
    challenge, (challenger, challenged, *others) = active_challenge(make_user, stakers=2)
    before = {u.pk: wallet_get(user_id=u.pk).balance for u in (challenger, challenged, *others)}
    # When the challenged user declines
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(challenged).post(f"/api/challenges/{challenge.pk}/decline/")
    # Then the challenge is cancelled and the payout engine opened its refund job
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    job = PayoutJob.objects.get(challenge=challenge)
    assert job.kind == PayoutJob.Kind.REFUND
    run_job_inline(job.pk)
    stakes = {s.user_id: s.amount for s in challenge.stakes.all()}
    for user_id, balance in before.items():
        assert wallet_get(user_id=user_id).balance == balance + stakes[user_id]
    # And the others are told why; the one who declined is not told their own news
    told = set(
        Notification.objects.filter(kind="challenge_cancelled", challenge=challenge).values_list(
            "user_id", flat=True
        )
    )
    assert told == {challenger.pk, *(u.pk for u in others)}
    note = Notification.objects.filter(challenge=challenge, kind="challenge_cancelled").first()
    assert note.data["reason"] == "declined"
    assert AuditEntry.objects.filter(action="challenge.decline", actor=challenged).exists()


@pytest.mark.parametrize("who", ["challenger", "staker", "stranger"])
def test_only_the_challenged_user_may_decline(client_for, make_user, who):
    challenge, (challenger, _, staker) = active_challenge(make_user, stakers=1)
    user = {"challenger": challenger, "staker": staker, "stranger": make_user()}[who]
    response = client_for(user).post(f"/api/challenges/{challenge.pk}/decline/")
    assert (response.status_code, response.json()["code"]) == (403, "not_challenged_user")
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.ACTIVE
    assert not PayoutJob.objects.exists()


def test_a_closed_challenge_cannot_be_declined(client_for, make_user):
    challenged = make_user()
    challenge = open_challenge(make_user(), challenged=challenged)
    assert (
        client_for(challenged).post(f"/api/challenges/{challenge.pk}/decline/").status_code == 200
    )
    again = client_for(challenged).post(f"/api/challenges/{challenge.pk}/decline/")
    assert (again.status_code, again.json()["code"]) == (409, "challenge_not_open")
    missing = client_for(challenged).post("/api/challenges/999999/decline/")
    assert (missing.status_code, missing.json()["code"]) == (404, "challenge_not_found")


def test_a_user_has_at_most_the_open_challenge_limit(client_for, make_user, settings):
    settings.CHALLENGE_OPEN_LIMIT = 3
    creator = make_user()
    client = client_for(creator)
    body = {"title": "Rain?", "due_date": (timezone.now() + timedelta(hours=1)).isoformat()}
    assert [client.post("/api/challenges/", body, format="json").status_code for _ in "abc"] == [
        201
    ] * 3
    refused = client.post("/api/challenges/", body, format="json")
    assert (refused.status_code, refused.json()["code"]) == (409, "too_many_open_challenges")
    assert Challenge.objects.filter(challenger=creator).count() == 3
    # A challenge that is no longer open frees its place
    first = Challenge.objects.filter(challenger=creator).order_by("id").first()
    Challenge.objects.filter(pk=first.pk).update(status=Challenge.Status.CANCELLED)
    assert client.post("/api/challenges/", body, format="json").status_code == 201
