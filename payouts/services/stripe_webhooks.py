"""Stripe's webhook events: verified, stored once, applied once.

``account.updated`` keeps connected accounts current, in Stripe's order, and pays the winners
whose account it enables; ``transfer.reversed`` takes each reversal of a payout back into the
escrow in the ledger, once.
"""

import json
import logging
from datetime import datetime
from typing import Any

import stripe
from django.conf import settings
from django.db import connection, transaction

from core.errors import DomainError, InvalidInput
from core.retention import rows_delete_batched
from core.services import audit_record
from ledger.models import Account, Transfer
from ledger.services import system_account_id, transfer_post
from payouts.models import PayoutEntry, StripeEvent
from payouts.services.connected_accounts import connected_account_sync
from payouts.services.engine import payout_job_counters_bump
from payouts.services.jobs import payout_entries_requeue_connected
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
    ``account.updated`` (applied only if no newer event of that account was; when it leaves
    payouts enabled, the user's entries that failed for want of an account are queued again
    in the same transaction) and ``transfer.reversed``; others are stored and ignored.
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
        created = body.get("created")
        created = created if type(created) is int else 0
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
            account = connected_account_sync(account=obj, created=created)
            if account is not None and account.payouts_enabled:
                payout_entries_requeue_connected(user_id=account.user_id, event_id=event_id)
        elif event_type == "transfer.reversed":
            stripe_transfer_reversed(event_id=event_id, transfer=obj)
    return True


def _reversals(transfer: dict[str, Any]) -> list[tuple[str, Any]]:
    """The transfer's reversals as (id, amount), oldest first, whatever their shape."""
    listed = (transfer.get("reversals") or {}).get("data") or []
    rows = [r for r in listed if isinstance(r, dict) and isinstance(r.get("id"), str)]
    rows.sort(key=lambda r: (r.get("created") if type(r.get("created")) is int else 0, r["id"]))
    return [(r["id"], r.get("amount")) for r in rows]


def stripe_transfer_reversed(*, event_id: str, transfer: dict[str, Any]) -> int:
    """Take each new reversal of a paid entry's transfer back into the escrow; return the
    amount newly reversed (0 when there was nothing to do).

    Call it inside the webhook's transaction. The entry is found by ``metadata.entry_id`` and
    checked against the transfer id, and locked. Each reversal in the transfer's
    ``reversals`` list is posted once, stripe_clearing -> escrow under the unique key
    ``reversal:<reversal_id>``, however many events carry it and in whatever order they
    arrive; the entry's ``reversed_amount`` (cumulative) and the job's ``paid_amount`` move
    by it, and staff see it in the audit trail. A reversal of 0 (or not an integer), or one
    that would take back more than was paid, changes nothing: it is logged and acknowledged,
    never refused (Stripe would only send it again). Once everything is taken back the entry
    is ``reversed``; it stays counted as terminal, so a running job still finalizes, with the
    escrow holding the reversed money.
    """
    entry_id = str((transfer.get("metadata") or {}).get("entry_id", ""))
    entry = (
        PayoutEntry.objects.select_for_update()
        .filter(
            pk=int(entry_id) if entry_id.isdigit() else 0,
            stripe_transfer_id=str(transfer.get("id", "")),
            status__in=[PayoutEntry.Status.COMPLETED, PayoutEntry.Status.REVERSED],
        )
        .first()
    )
    if entry is None:
        logger.warning("transfer.reversed %s: no paid entry for %s", event_id, transfer)
        return 0
    reversals = _reversals(transfer)
    keys = {reversal_id: f"reversal:{reversal_id}" for reversal_id, _ in reversals}
    # The entry row lock serializes every event about this entry, so what is not posted yet
    # is exactly what this event adds.
    posted = set(
        Transfer.objects.filter(idempotency_key__in=keys.values()).values_list(
            "idempotency_key", flat=True
        )
    )
    new: list[tuple[str, int]] = []
    total = entry.reversed_amount
    for reversal_id, amount in reversals:
        if keys[reversal_id] in posted:
            continue
        if type(amount) is not int or amount <= 0 or total + amount > entry.amount:
            logger.warning(
                "%s: reversal %s of %r on entry %s (%s of %s reversed) ignored",
                event_id,
                reversal_id,
                amount,
                entry.pk,
                total,
                entry.amount,
            )
            continue
        new.append((reversal_id, amount))
        total += amount
    if not new:
        return 0
    taken = total - entry.reversed_amount
    entry.reversed_amount = total
    if total == entry.amount:
        entry.status = PayoutEntry.Status.REVERSED
    entry.save(update_fields=["reversed_amount", "status"])
    # Job row before accounts: the engine's lock order.
    payout_job_counters_bump(job_id=entry.job_id, paid_amount=-taken)
    for reversal_id, amount in new:
        transfer_post(
            debit_account_id=system_account_id(Account.Kind.STRIPE_CLEARING),
            credit_account_id=job_escrow_id(entry.job_id),
            amount=amount,
            kind=Transfer.Kind.REVERSAL,
            idempotency_key=keys[reversal_id],
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
                "reversal_id": reversal_id,
                "amount": amount,
                "reversed_amount": total,
                "event_id": event_id,
            },
        )
    return taken


def stripe_events_prune(
    *, received_before: datetime, batch_size: int, until: float | None = None
) -> int:
    """Delete stored webhook events received before ``received_before``. Batched and safe to
    run twice at once.

    Each stored event was applied in the transaction that stored it, so the row only guards
    against a second delivery. Stripe retries an event for up to three days and the signature
    tolerance refuses a captured request after five minutes, so an event older than the
    retention (30 days by default) can no longer arrive again.
    """
    return rows_delete_batched(
        table=StripeEvent._meta.db_table,
        condition="received_at < %(before)s",
        params={"before": received_before},
        batch_size=batch_size,
        until=until,
    )
