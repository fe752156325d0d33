"""Stripe's webhook events: verified, stored once, applied once.

``account.updated`` keeps connected accounts current; ``transfer.reversed`` takes a reversed
payout back out of the winner's reach in the ledger.
"""

import json
import logging
from typing import Any

import stripe
from django.conf import settings
from django.db import connection, transaction

from core.errors import DomainError, InvalidInput
from core.services import audit_record
from ledger.models import Account, Transfer
from ledger.services import system_account_id, transfer_post
from payouts.models import PayoutEntry
from payouts.services.connected_accounts import connected_account_sync
from payouts.services.engine import payout_job_counters_bump
from payouts.services.stripe_rail import job_escrow_id

logger = logging.getLogger(__name__)

# Stripe's own default: an event signed more than five minutes ago is refused as a replay.
WEBHOOK_TOLERANCE_SECONDS = 300


class InvalidSignature(DomainError):
    code = "invalid_signature"
    status = 400
    default_detail = "The Stripe-Signature header does not match the body, or it is too old."


_EVENT_INSERT_SQL = """
INSERT INTO payouts_stripeevent (event_id, type, payload) VALUES (%s, %s, %s::jsonb)
ON CONFLICT (event_id) DO NOTHING
RETURNING id
"""


def stripe_webhook_receive(*, payload: bytes, signature: str | None) -> bool:
    """Verify a Stripe webhook, store its event once, and apply it; False for a replay.

    The signature is checked by the stripe library (``STRIPE_WEBHOOK_SECRET``, 5-minute
    tolerance) before anything is read: a bad or stale one raises ``InvalidSignature`` and
    changes nothing, a body that is not an event raises ``InvalidInput(malformed_request)``.
    The event row and its effects commit together, so an event is applied exactly once however
    often Stripe (or an attacker replaying a captured request) sends it. Handled types:
    ``account.updated`` and ``transfer.reversed``; others are stored and ignored.
    """
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise DomainError("Stripe webhooks are not configured.", code="stripe_not_configured")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, settings.STRIPE_WEBHOOK_SECRET, WEBHOOK_TOLERANCE_SECONDS
        )
        body = event.to_dict()
        event_id, event_type = str(body["id"]), str(body["type"])
        obj = body["data"]["object"]
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature() from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput("The body is not a Stripe event.", code="malformed_request") from exc
    if not isinstance(obj, dict):
        raise InvalidInput("The event has no data object.", code="malformed_request")
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_EVENT_INSERT_SQL, [event_id, event_type, json.dumps(body)])
        if cursor.fetchone() is None:
            return False
        if event_type == "account.updated" and isinstance(obj.get("id"), str):
            connected_account_sync(
                stripe_account_id=obj["id"], payouts_enabled=bool(obj.get("payouts_enabled"))
            )
        elif event_type == "transfer.reversed":
            stripe_transfer_reversed(event_id=event_id, transfer=obj)
    return True


def stripe_transfer_reversed(*, event_id: str, transfer: dict[str, Any]) -> bool:
    """Undo a paid entry whose Stripe transfer was reversed; False if there is nothing to undo.

    Call it inside the webhook's transaction. The entry (found by ``metadata.entry_id`` and
    checked against the transfer id) becomes ``reversed``; the reversed amount (never more
    than the entry's) goes back stripe_clearing -> escrow under the unique key
    ``reversal:<entry_id>``, the job's ``paid_amount`` drops by it, and the audit trail
    records it for staff. The entry stays counted as terminal, so a running job still
    finalizes, with the escrow holding the reversed money.
    """
    entry_id = str((transfer.get("metadata") or {}).get("entry_id", ""))
    entry = (
        PayoutEntry.objects.select_for_update()
        .filter(
            pk=int(entry_id) if entry_id.isdigit() else 0,
            stripe_transfer_id=str(transfer.get("id", "")),
            status=PayoutEntry.Status.COMPLETED,
        )
        .first()
    )
    if entry is None:
        logger.warning("transfer.reversed %s: no completed entry for %s", event_id, transfer)
        return False
    reversed_amount = transfer.get("amount_reversed")
    amount = min(entry.amount, reversed_amount if type(reversed_amount) is int else entry.amount)
    entry.status = PayoutEntry.Status.REVERSED
    entry.save(update_fields=["status"])
    payout_job_counters_bump(job_id=entry.job_id, paid_amount=-amount)
    transfer_post(
        debit_account_id=system_account_id(Account.Kind.STRIPE_CLEARING),
        credit_account_id=job_escrow_id(entry.job_id),
        amount=amount,
        kind=Transfer.Kind.REVERSAL,
        idempotency_key=f"reversal:{entry.pk}",
    )
    audit_record(
        actor=None,
        action="payout_entry.reversed",
        target_type="payout_entry",
        target_id=entry.pk,
        details={
            "job_id": entry.job_id,
            "user_id": entry.user_id,
            "stripe_transfer_id": entry.stripe_transfer_id,
            "amount": amount,
            "event_id": event_id,
        },
    )
    return True
