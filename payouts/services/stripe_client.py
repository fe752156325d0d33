"""The one place that talks to Stripe: transfer creation, lookup, and error classification.

Nothing here touches the database, so callers can (and must) call it outside any transaction.
The ``stripe`` library is pointed at settings on every call (API key, API base, timeout), never
at import time, so a process picks up its own configuration and tests can aim it at a fake.
Its own network retries are off: every request goes through the shared rate limit and every
retry through the entry's attempt count and backoff.
"""

import time
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

import stripe
from django.conf import settings

from core.retry import backoff_delay
from payouts.services.ratelimit import stripe_token_take

# Stripe error codes that mean "the destination cannot receive this transfer".
_ACCOUNT_ERROR_CODES = frozenset(
    {"account_invalid", "insufficient_capabilities_for_transfer", "account_closed"}
)

ACCOUNT_NOT_CONNECTED = "stripe_account_not_connected"


class Outcome(StrEnum):
    PAID = "paid"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class TransferResult:
    outcome: Outcome
    transfer_id: str = ""
    # A stable code for PayoutEntry.failure_reason (``stripe_rate_limited``, ...).
    reason: str = ""
    error: str = ""


def stripe_configured() -> bool:
    """Whether this process may use the Stripe rail at all."""
    return bool(settings.STRIPE_API_KEY)


def transfer_idempotency_key(entry_id: int) -> str:
    """The key for an entry's transfer: deterministic, so every retry of the entry reuses it."""
    return f"payout:{entry_id}"


def transfer_group(job_id: int) -> str:
    return f"job-{job_id}"


@cache
def _http_client(timeout: float) -> stripe.HTTPClient:
    return stripe.RequestsClient(timeout=timeout)


def _configure() -> None:
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.max_network_retries = 0
    stripe.enable_telemetry = False
    stripe.default_http_client = _http_client(settings.STRIPE_TIMEOUT)


def error_classify(exc: stripe.StripeError) -> TransferResult:
    """Transient (worth retrying with the same key) or permanent, with a stable reason code.

    Transient: connection errors and timeouts, 429, 5xx and 409 (a lock timeout, or the same
    key still executing). Permanent: every other 4xx; an unknown, invalid or disabled
    destination is ``stripe_account_not_connected``.
    """
    status = exc.http_status or 0
    code = (exc.error.code if exc.error else None) or exc.code or ""
    param = (exc.error.param if exc.error else None) or ""
    message = f"{type(exc).__name__}({status or '-'}, {code or '-'}): {exc.user_message or exc}"
    if isinstance(exc, stripe.APIConnectionError):
        return TransferResult(Outcome.TRANSIENT, reason="stripe_connection_error", error=message)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return TransferResult(Outcome.TRANSIENT, reason="stripe_rate_limited", error=message)
    if status >= 500 or status == 409 or code == "lock_timeout":
        return TransferResult(Outcome.TRANSIENT, reason="stripe_unavailable", error=message)
    if param == "destination" or code in _ACCOUNT_ERROR_CODES:
        return TransferResult(Outcome.PERMANENT, reason=ACCOUNT_NOT_CONNECTED, error=message)
    if isinstance(exc, stripe.IdempotencyError):
        return TransferResult(Outcome.PERMANENT, reason="stripe_idempotency_error", error=message)
    reason = f"stripe_{code}" if code else f"stripe_http_{status or 'error'}"
    return TransferResult(Outcome.PERMANENT, reason=reason[:64], error=message)


def transfer_create(
    *, entry_id: int, job_id: int, amount: int, currency: str, destination: str
) -> TransferResult:
    """Ask Stripe for one transfer, always with the entry's own idempotency key.

    Safe to call again for the same entry (within Stripe's 24 hours of key memory): the same
    key and parameters give back the first transfer instead of a second one. Waits for a token
    of the shared rate limit first. Never raises for Stripe errors; they come back classified.
    """
    _configure()
    stripe_token_take()
    try:
        transfer = stripe.Transfer.create(
            api_key=settings.STRIPE_API_KEY,
            idempotency_key=transfer_idempotency_key(entry_id),
            amount=amount,
            currency=currency,
            destination=destination,
            transfer_group=transfer_group(job_id),
            metadata={"job_id": str(job_id), "entry_id": str(entry_id)},
        )
    except stripe.StripeError as exc:
        return error_classify(exc)
    return TransferResult(Outcome.PAID, transfer_id=transfer.id)


# A lookup walks many pages; each page is retried a few times on transient errors (reads are
# always safe to repeat) so that one dropped request does not fail the whole walk.
LOOKUP_PAGE_TRIES = 5


def _transfers_page(*, job_id: int, starting_after: str | None) -> stripe.ListObject:
    params: dict[str, Any] = {"transfer_group": transfer_group(job_id), "limit": 100}
    if starting_after:
        params["starting_after"] = starting_after
    failures = 0
    while True:
        stripe_token_take()
        try:
            return stripe.Transfer.list(api_key=settings.STRIPE_API_KEY, **params)
        except stripe.StripeError as exc:
            failures += 1
            if failures == LOOKUP_PAGE_TRIES or error_classify(exc).outcome != Outcome.TRANSIENT:
                raise
            time.sleep(backoff_delay(failures - 1, base=0.2, cap=2.0))


def transfers_find(*, job_id: int, entry_ids: set[int]) -> dict[int, str]:
    """Map each of ``entry_ids`` that Stripe already paid to its transfer id.

    Walks the job's transfer group, newest first (metadata names the entry), one rate-limited
    page of 100 at a time, and stops once every entry is found. Raises
    ``stripe.StripeError`` when Stripe cannot be asked; the caller must then create nothing.
    """
    _configure()
    found: dict[int, str] = {}
    last_id: str | None = None
    while len(found) < len(entry_ids):
        page = _transfers_page(job_id=job_id, starting_after=last_id)
        for transfer in page.data:
            entry_id = str(transfer.to_dict().get("metadata", {}).get("entry_id", ""))
            if entry_id.isdigit() and int(entry_id) in entry_ids:
                found[int(entry_id)] = transfer.id
        if not page.has_more or not page.data:
            break
        last_id = page.data[-1].id
    return found
