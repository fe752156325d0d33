"""``POST /api/webhooks/stripe/``: signatures, replays, account updates and transfer reversals."""

import json
import time

import pytest
from stripe import WebhookSignature

from core.models import AuditEntry
from ledger.models import Account, Transfer
from ledger.services import system_account_id
from payouts.models import ConnectedAccount, PayoutEntry, StripeEvent
from payouts.services.connected_accounts import connected_account_link
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


def account_event(event_id, account_id, enabled):
    return {
        "id": event_id,
        "object": "event",
        "type": "account.updated",
        "data": {"object": {"id": account_id, "object": "account", "payouts_enabled": enabled}},
    }


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


def test_unhandled_event_types_are_stored_and_ignored(client, fake_stripe):
    event = {"id": "evt_p", "type": "payout.paid", "data": {"object": {"id": "po_1"}}}
    assert post(client, event).status_code == 200
    assert StripeEvent.objects.get().type == "payout.paid"


def test_transfer_reversed_returns_the_money_to_escrow_once_and_tells_staff(
    client, fake_stripe, staff, settings
):
    # Given a paid stripe job
    settings.STRIPE_RATE_LIMIT = 1000.0
    job = stripe_job(fake_stripe, staff, stakers=4)
    payout_batch_stripe(job_id=job.pk)
    entry = job.entries.order_by("id").first()
    entry.refresh_from_db()
    clearing = system_account_id(Account.Kind.STRIPE_CLEARING)
    clearing_before = balance(clearing)
    transfer = next(t for t in fake_stripe.transfers() if t["id"] == entry.stripe_transfer_id)
    event = {
        "id": "evt_rev",
        "type": "transfer.reversed",
        "data": {"object": {**transfer, "reversed": True, "amount_reversed": entry.amount}},
    }
    # When Stripe reports the transfer reversed, twice
    assert post(client, event).json()["duplicate"] is False
    assert post(client, event).json()["duplicate"] is True
    # Then the entry is reversed and its money went back to escrow exactly once
    entry.refresh_from_db()
    assert entry.status == PayoutEntry.Status.REVERSED
    reversal = Transfer.objects.get(idempotency_key=f"reversal:{entry.pk}")
    assert reversal.kind == Transfer.Kind.REVERSAL
    assert reversal.amount == entry.amount
    assert balance(job.challenge.escrow_id) == entry.amount
    assert balance(clearing) == clearing_before - entry.amount
    job.refresh_from_db()
    assert job.paid_amount == job.total_amount - entry.amount
    # And staff see it in the audit trail
    audit = AuditEntry.objects.get(action="payout_entry.reversed")
    assert audit.target_id == str(entry.pk)
    assert audit.details["amount"] == entry.amount
    assert audit.details["stripe_transfer_id"] == entry.stripe_transfer_id


def test_a_reversal_for_an_unknown_transfer_changes_nothing(client, fake_stripe):
    event = {
        "id": "evt_unknown",
        "type": "transfer.reversed",
        "data": {"object": {"id": "tr_nope", "metadata": {"entry_id": "999999"}}},
    }
    assert post(client, event).status_code == 200
    assert not Transfer.objects.filter(kind=Transfer.Kind.REVERSAL).exists()
