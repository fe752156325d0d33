"""``POST /api/webhooks/stripe/``: signatures, replays, account updates and transfer reversals."""

import json
import time

import pytest
import stripe
from stripe import WebhookSignature

from core.models import AuditEntry
from ledger.models import Account, Transfer
from ledger.services import system_account_id
from notifications.models import Notification
from payouts.models import ConnectedAccount, PayoutEntry, PayoutJob, StripeEvent
from payouts.services.connected_accounts import connected_account_link
from payouts.services.engine import payout_job_notify
from payouts.services.stripe_rail import payout_batch_stripe
from tests.payouts.test_stripe_rail import balance, stripe_job

pytestmark = pytest.mark.django_db

URL = "/api/webhooks/stripe/"


def post(client, event, *, key="whsec_fake", timestamp=None, body=None, signature=None):
    """Deliver ``event`` signed with ``key`` (or with the given ``signature``; "" sends none)."""
    payload = body if body is not None else json.dumps(event)
    if signature is None:
        signature = WebhookSignature.generate_signature_header(payload, key, timestamp=timestamp)
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature else {}
    return client.post(URL, data=payload, content_type="application/json", **headers)


def account_event(event_id, account_id, enabled, created=None):
    event = {
        "id": event_id,
        "object": "event",
        "type": "account.updated",
        "data": {"object": {"id": account_id, "object": "account", "payouts_enabled": enabled}},
    }
    return event if created is None else {**event, "created": created}


@pytest.fixture
def connected(fake_stripe, make_user, staff):
    user = make_user("winner")
    connected_account_link(
        user_id=user.pk, stripe_account_id="acct_w", payouts_enabled=False, actor=staff
    )
    return user


@pytest.mark.parametrize("variant", ["wrong_secret", "stale", "missing", "garbage", "tampered"])
def test_a_bad_or_stale_signature_is_a_400_and_changes_nothing(client, connected, variant):
    event = account_event("evt_1", "acct_w", True)
    kwargs = {
        "wrong_secret": {"key": "whsec_other"},
        "stale": {"timestamp": int(time.time()) - 301},
        "missing": {"signature": ""},
        "garbage": {"signature": "t=abc,v1=zz"},
        "tampered": {"body": json.dumps(account_event("evt_1", "acct_w", True)) + " "},
    }[variant]
    if variant == "tampered":
        kwargs["signature"] = WebhookSignature.generate_signature_header(
            json.dumps(event), "whsec_fake"
        )
    response = post(client, event, **kwargs)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert not StripeEvent.objects.exists()
    assert ConnectedAccount.objects.get(user=connected).payouts_enabled is False


@pytest.mark.parametrize(
    "body", ["not json", "[1, 2]", '{"id": "evt_x"}', '{"id": "e", "type": "t", "data": 3}']
)
def test_a_signed_but_malformed_body_is_a_400_malformed_request(client, connected, body):
    response = post(client, None, body=body)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"
    assert not StripeEvent.objects.exists()


def test_account_updated_sets_payouts_enabled_and_a_replay_is_applied_once(client, connected):
    # Given an event enabling payouts, then a later one disabling them
    enable = account_event("evt_on", "acct_w", True)
    disable = account_event("evt_off", "acct_w", False)
    first = post(client, enable)
    assert first.status_code == 200
    assert first.json() == {"received": True, "duplicate": False}
    assert ConnectedAccount.objects.get(user=connected).payouts_enabled is True
    post(client, disable)
    # When the first event is delivered again
    replay = post(client, enable)
    # Then it is acknowledged but does nothing: payouts stay disabled
    assert replay.status_code == 200
    assert replay.json() == {"received": True, "duplicate": True}
    assert ConnectedAccount.objects.get(user=connected).payouts_enabled is False
    assert StripeEvent.objects.count() == 2


def test_an_older_account_event_never_undoes_a_newer_one(client, connected):
    # Given Stripe enabled payouts (created at t=100), then disabled them (t=200), and the
    # deliveries arrive the other way round
    newer = account_event("evt_newer", "acct_w", False, created=200)
    older = account_event("evt_older", "acct_w", True, created=100)
    assert post(client, newer).json()["duplicate"] is False
    # When the older one arrives
    assert post(client, older).status_code == 200
    # Then it is stored but changes nothing: the newer state stands
    account = ConnectedAccount.objects.get(user=connected)
    assert (account.payouts_enabled, account.last_event_created) == (False, 200)
    assert StripeEvent.objects.count() == 2
    # And an event of the same second as the newest still applies (arrival order)
    post(client, account_event("evt_same_second", "acct_w", True, created=200))
    assert ConnectedAccount.objects.get(user=connected).payouts_enabled is True


def test_enabling_an_account_pays_the_entries_that_waited_for_it_without_staff(
    client, fake_stripe, staff, settings, django_capture_on_commit_callbacks
):
    # Given a finished Stripe job whose first winner had no account: failed, money in escrow,
    # told to connect one
    settings.STRIPE_RATE_LIMIT = 1000.0
    job = stripe_job(fake_stripe, staff, stakers=4, unconnected=1)
    payout_batch_stripe(job_id=job.pk)
    waiting = job.entries.get(status=PayoutEntry.Status.FAILED)
    assert waiting.failure_reason == "stripe_account_not_connected"
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED_WITH_FAILURES
    payout_job_notify(job_id=job.pk)
    assert Notification.objects.get(user_id=waiting.user_id).kind == "payout_account_needed"
    # And the winner then opens an account at Stripe (not enabled yet) and onboards
    connected_account_link(
        user_id=waiting.user_id, stripe_account_id="acct_late", payouts_enabled=False, actor=staff
    )
    fake_stripe.accounts_put([{"id": "acct_late", "payouts_enabled": False}])
    event = fake_stripe.account_update("acct_late", payouts_enabled=True)
    # When Stripe's account.updated arrives
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert post(client, event).status_code == 200
    # Then the entry is queued again at once, the job runs again, and batches are sent
    waiting.refresh_from_db()
    job.refresh_from_db()
    assert (waiting.status, waiting.attempt_count) == (PayoutEntry.Status.PENDING, 0)
    assert (job.status, job.failed_count) == (PayoutJob.Status.RUNNING, 0)
    assert callbacks, "batches must be sent after commit"
    audit = AuditEntry.objects.get(action="payout_job.retry_failed")
    assert audit.actor_id is None
    assert audit.details["reason"] == "stripe_account_enabled"
    assert audit.details["event_id"] == event["id"]
    # And the next batch pays it, once, and the winner hears about it
    payout_batch_stripe(job_id=job.pk)
    waiting.refresh_from_db()
    job.refresh_from_db()
    assert waiting.status == PayoutEntry.Status.COMPLETED
    assert job.status == PayoutJob.Status.COMPLETED
    assert balance(job.challenge.escrow_id) == 0
    assert fake_stripe.stats()["created_per_key"][f"payout:{waiting.pk}"] == 1
    payout_job_notify(job_id=job.pk)
    kinds = Notification.objects.filter(user_id=waiting.user_id).values_list("kind", flat=True)
    assert sorted(kinds) == ["payout_account_needed", "payout_completed"]
    # And a replay of the event does nothing more
    assert post(client, event).json()["duplicate"] is True
    assert AuditEntry.objects.filter(action="payout_job.retry_failed").count() == 1


def test_unhandled_event_types_are_stored_and_ignored(client, fake_stripe):
    event = {"id": "evt_p", "type": "payout.paid", "data": {"object": {"id": "po_1"}}}
    assert post(client, event).status_code == 200
    assert StripeEvent.objects.get().type == "payout.paid"


def reverse(fake, transfer_id: str, amount: int) -> dict:
    """Reverse part of a transfer at the fake through the stripe library; return the
    ``transfer.reversed`` event Stripe would send."""
    stripe.api_base = fake.url
    stripe.Transfer.create_reversal(
        transfer_id, amount=amount, api_key="sk_test_fake", idempotency_key=f"rev-{time.time_ns()}"
    )
    return fake.events()[-1]


@pytest.fixture
def paid_entry(fake_stripe, staff, settings):
    """A paid entry of a completed Stripe job, and its transfer at the fake."""
    settings.STRIPE_RATE_LIMIT = 1000.0
    job = stripe_job(fake_stripe, staff, stakers=4)
    payout_batch_stripe(job_id=job.pk)
    entry = job.entries.order_by("id").first()
    entry.refresh_from_db()
    return entry


def test_partial_reversals_are_each_taken_back_once_in_any_order(client, fake_stripe, paid_entry):
    # Given a paid entry whose transfer Stripe reverses in two parts: 30%, then 50%
    entry, job = paid_entry, paid_entry.job
    clearing = system_account_id(Account.Kind.STRIPE_CLEARING)
    clearing_before = balance(clearing)
    first_part, second_part = entry.amount * 3 // 10, entry.amount // 2
    first = reverse(fake_stripe, entry.stripe_transfer_id, first_part)
    second = reverse(fake_stripe, entry.stripe_transfer_id, second_part)
    assert first["type"] == second["type"] == "transfer.reversed"
    # When the second event (listing both reversals) arrives first, then the first, then both
    # again
    for event in (second, first, second, first):
        assert post(client, event).status_code == 200
    # Then each reversal was posted once, keyed by its own id, and the entry knows the total
    entry.refresh_from_db()
    reversal_ids = [r["id"] for r in second["data"]["object"]["reversals"]["data"]]
    posted = Transfer.objects.filter(kind=Transfer.Kind.REVERSAL).order_by("amount")
    assert [t.idempotency_key for t in posted] == [f"reversal:{i}" for i in reversal_ids]
    assert [t.amount for t in posted] == [first_part, second_part]
    assert entry.reversed_amount == first_part + second_part
    assert entry.status == PayoutEntry.Status.COMPLETED  # not everything was taken back
    assert balance(job.challenge.escrow_id) == first_part + second_part
    assert balance(clearing) == clearing_before - first_part - second_part
    job.refresh_from_db()
    assert job.paid_amount == job.total_amount - first_part - second_part
    # And staff see each reversal in the audit trail
    audits = AuditEntry.objects.filter(action="payout_entry.reversed").order_by("id")
    assert [a.details["reversal_id"] for a in audits] == reversal_ids
    assert audits.last().details["reversed_amount"] == first_part + second_part
    # When the rest is reversed too
    rest = entry.amount - first_part - second_part
    assert post(client, reverse(fake_stripe, entry.stripe_transfer_id, rest)).status_code == 200
    # Then the entry is reversed in full and the escrow holds all of it
    entry.refresh_from_db()
    assert entry.status == PayoutEntry.Status.REVERSED
    assert entry.reversed_amount == entry.amount
    assert balance(job.challenge.escrow_id) == entry.amount


@pytest.mark.parametrize("amount", ["zero", "too_much", "not_a_number"])
def test_a_reversal_of_nothing_or_of_more_than_was_paid_is_acknowledged_and_changes_nothing(
    client, fake_stripe, paid_entry, amount
):
    # Given a paid entry and an event whose only reversal is 0, larger than the payout, or junk
    entry = paid_entry
    transfer = next(t for t in fake_stripe.transfers() if t["id"] == entry.stripe_transfer_id)
    value = {"zero": 0, "too_much": entry.amount + 1, "not_a_number": "12"}[amount]
    reversal = {"id": "trr_odd", "object": "transfer_reversal", "amount": value}
    event = {
        "id": f"evt_odd_{amount}",
        "type": "transfer.reversed",
        "created": int(time.time()),
        "data": {"object": {**transfer, "reversals": {"data": [reversal], "has_more": False}}},
    }
    escrow_before = balance(entry.job.challenge.escrow_id)
    # When it is delivered, twice
    responses = [post(client, event), post(client, event)]
    # Then it is acknowledged (no 400 for Stripe to retry forever) and nothing moved
    assert [r.status_code for r in responses] == [200, 200]
    entry.refresh_from_db()
    assert (entry.status, entry.reversed_amount) == (PayoutEntry.Status.COMPLETED, 0)
    assert not Transfer.objects.filter(kind=Transfer.Kind.REVERSAL).exists()
    assert balance(entry.job.challenge.escrow_id) == escrow_before


def test_a_reversal_for_an_unknown_transfer_changes_nothing(client, fake_stripe):
    event = {
        "id": "evt_unknown",
        "type": "transfer.reversed",
        "data": {"object": {"id": "tr_nope", "metadata": {"entry_id": "999999"}}},
    }
    assert post(client, event).status_code == 200
    assert not Transfer.objects.filter(kind=Transfer.Kind.REVERSAL).exists()
