"""Every staker learns the outcome once, in one statement per job: paid, lost, refunded,
account needed, or failed (in words, without internal detail)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Notification
from payouts.services.engine import payout_job_notify
from payouts.services.stripe_rail import payout_batch_stripe
from tests.payouts.test_stripe_rail import stripe_job

pytestmark = pytest.mark.django_db


def test_a_stripe_job_tells_each_staker_their_own_outcome_once(fake_stripe, staff, settings):
    # Given a finished Stripe job: 2 winners without an account, some whose every transfer
    # request was dropped (one attempt allowed; Stripe's list shows no transfer), the rest paid
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_MAX_ATTEMPTS = 1
    fake_stripe.configure(seed=2, faults={"reset": 0.4}, faults_on_reads=False)
    job = stripe_job(fake_stripe, staff, stakers=16, unconnected=2)
    payout_batch_stripe(job_id=job.pk, budget=2)
    entries = {e.user_id: e for e in job.entries.all()}
    reasons = {e.failure_reason for e in entries.values()}
    assert reasons == {"", "stripe_account_not_connected", "stripe_attempts_exhausted"}
    # When the outcomes are sent
    with CaptureQueriesContext(connection) as queries:
        created = payout_job_notify(job_id=job.pk)
    # Then in one statement, whatever the number of stakers
    inserts = [q for q in queries.captured_queries if "INSERT INTO" in q["sql"]]
    assert len(inserts) == 1
    stakes = dict(job.challenge.stakes.values_list("user_id", "amount"))
    assert created == len(stakes)
    # And each staker holds exactly one notification, saying what happened to them
    notes = {n.user_id: n for n in Notification.objects.filter(challenge=job.challenge)}
    assert set(notes) == set(stakes)
    for user_id, note in notes.items():
        entry = entries.get(user_id)
        if entry is None:
            expected = ("challenge_lost", stakes[user_id])
        elif entry.status == "completed":
            expected = ("payout_completed", entry.amount)
        elif entry.failure_reason == "stripe_account_not_connected":
            expected = ("payout_account_needed", entry.amount)
            assert note.data["action"] == "POST /api/payout-account/"
            assert "POST /api/payout-account/" in note.body
        else:
            expected = ("payout_failed", entry.amount)
            assert "did not answer" in note.body
        assert (note.kind, note.data["amount"]) == expected
        assert f"{expected[1]} coin" in note.body
        # No internal detail reaches a person
        assert "stripe_" not in note.body
        assert "Error" not in note.body
    assert {n.priority for n in notes.values() if n.kind.startswith("payout_a")} == {"high"}
    # And sending again adds nothing
    assert payout_job_notify(job_id=job.pk) == 0
