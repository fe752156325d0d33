"""The one place that talks to Stripe: transfers (creation, lookup), Connect accounts
(creation, onboarding links, lookup), and error classification.

Nothing here touches the database, so callers can (and must) call it outside any transaction.
The ``stripe`` library is pointed at settings on every call (API key, API base, timeout), never
at import time, so a process picks up its own configuration and tests can aim it at a fake.
Every HTTP request takes a token of the shared rate limit in the HTTP client itself, once its
connection is open (``stripe_http``). The library's own network retries are off: every retry
goes through the entry's attempt count and backoff.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

import stripe
from django.conf import settings
from django.utils import timezone

from core.errors import DomainError
from core.retry import backoff_delay
from payouts.metrics import STRIPE_REQUESTS
from payouts.services.stripe_http import RateLimitedRequestsClient, ratelimit_waited

logger = logging.getLogger(__name__)

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
class StripeCall:
    """How one exchange with Stripe went, for the entry's attempt history (``PayoutAttempt``)."""

    started_at: datetime
    finished_at: datetime
    duration_ms: int
    http_status: int | None = None
    request_id: str = ""
    # A lookup in the transfer list, not a creation: a transfer found this way is "reconciled".
    lookup: bool = False


@dataclass(frozen=True, slots=True)
class TransferResult:
    outcome: Outcome
    transfer_id: str = ""
    # A stable code for PayoutEntry.failure_reason (``stripe_rate_limited``, ...).
    reason: str = ""
    error: str = ""
    # The Stripe exchange behind this result; None when no request was made.
    call: StripeCall | None = field(default=None, compare=False)


class StripeNotConfigured(DomainError):
    code = "stripe_not_configured"
    status = 503
    default_detail = "Stripe payouts are not configured on this server."


class StripeUnavailable(DomainError):
    code = "stripe_unavailable"
    status = 503
    default_detail = "Stripe could not be reached; please try again in a moment."


def stripe_configured() -> bool:
    """Whether this process may use the Stripe rail at all."""
    return bool(settings.STRIPE_API_KEY)


class CallTimer:
    """Wall-clock start and end of one exchange, and its duration on the monotonic clock, not
    counting the time its requests waited for the rate limit (``waited``)."""

    def __init__(self) -> None:
        self.started_at = timezone.now()
        self._start = time.monotonic()
        self._waited_before = ratelimit_waited()

    def waited(self) -> float:
        """Seconds this thread's requests waited for rate-limit tokens since the timer started."""
        return ratelimit_waited() - self._waited_before

    def call(self, *, http_status: int | None, request_id: str | None, lookup=False) -> StripeCall:
        waited = self.waited()
        return StripeCall(
            started_at=self.started_at + timedelta(seconds=waited),
            finished_at=timezone.now(),
            duration_ms=max(0, round((time.monotonic() - self._start - waited) * 1000)),
            http_status=http_status,
            request_id=request_id or "",
            lookup=lookup,
        )


def transfer_idempotency_key(entry_id: int) -> str:
    """The key for an entry's transfer: deterministic, so every retry of the entry reuses it."""
    return f"payout:{entry_id}"


def transfer_group(job_id: int) -> str:
    return f"job-{job_id}"


@cache
def _http_client(timeout: float) -> stripe.HTTPClient:
    return RateLimitedRequestsClient(timeout=timeout)


def _configure() -> None:
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.max_network_retries = 0
    stripe.enable_telemetry = False
    stripe.default_http_client = _http_client(settings.STRIPE_TIMEOUT)


def error_classify(exc: stripe.StripeError, timer: CallTimer | None = None) -> TransferResult:
    """Transient (worth retrying with the same key) or permanent, with a stable reason code.

    Transient: connection errors and timeouts, 429, 5xx and 409 (a lock timeout, or the same
    key still executing). Permanent: every other 4xx; an unknown, invalid or disabled
    destination is ``stripe_account_not_connected``. With a ``timer`` the result carries the
    exchange (status, request id, timing) for the attempt history.
    """
    result = _error_classify(exc)
    if timer is None:
        return result
    call = timer.call(http_status=exc.http_status, request_id=exc.request_id)
    return TransferResult(result.outcome, reason=result.reason, error=result.error, call=call)


def _error_classify(exc: stripe.StripeError) -> TransferResult:
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
    key and parameters give back the first transfer instead of a second one. Its request waits
    for a token of the shared rate limit. Never raises for Stripe errors; they come back
    classified.
    """
    _configure()
    timer = CallTimer()
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
        result = error_classify(exc, timer)
    else:
        response = transfer.last_response
        call = timer.call(
            http_status=response.code if response else 200,
            request_id=response.request_id if response else "",
        )
        result = TransferResult(Outcome.PAID, transfer_id=transfer.id, call=call)
    _outcome_record(
        "transfer_create",
        result,
        waited=timer.waited(),
        job_id=job_id,
        entry_id=entry_id,
        amount=amount,
        currency=currency,
    )
    return result


# Metric label of each outcome: "paid" is how a creation succeeds; any call that answers is "ok".
_OUTCOME_CLASS = {
    Outcome.PAID: "ok",
    Outcome.TRANSIENT: "transient",
    Outcome.PERMANENT: "permanent",
}
_OK = TransferResult(Outcome.PAID)


def _outcome_record(operation: str, result: TransferResult, *, waited: float, **fields) -> None:
    """One INFO line and one count per Stripe request. Only ids, amounts, Stripe's request id
    and its error class and code: never the API key, request headers or account details."""
    outcome = _OUTCOME_CLASS[result.outcome]
    STRIPE_REQUESTS.inc(operation=operation, outcome=outcome)
    logger.info(
        "stripe %s %s%s",
        operation,
        outcome,
        f" ({result.reason})" if result.reason else "",
        extra={
            "stripe_operation": operation,
            "stripe_outcome": outcome,
            "stripe_reason": result.reason or None,
            "stripe_transfer_id": result.transfer_id or None,
            "stripe_request_id": (result.call.request_id or None) if result.call else None,
            "ratelimit_wait_seconds": round(waited, 4),
            **fields,
        },
    )


# A lookup walks many pages; each page is retried a few times on transient errors (reads are
# always safe to repeat) so that one dropped request does not fail the whole walk.
LOOKUP_PAGE_TRIES = 5


def _list_page(
    lister: Callable[..., stripe.ListObject], *, starting_after: str | None, **params: Any
) -> stripe.ListObject:
    params["limit"] = 100
    if starting_after:
        params["starting_after"] = starting_after
    # "transfer_list", "account_list": the metric and log label of these calls.
    operation = f"{lister.__self__.OBJECT_NAME}_list"  # type: ignore[attr-defined]
    failures = 0
    while True:
        timer = CallTimer()
        try:
            page = lister(api_key=settings.STRIPE_API_KEY, **params)
        except stripe.StripeError as exc:
            result = error_classify(exc)
            _outcome_record(operation, result, waited=timer.waited())
            failures += 1
            if failures == LOOKUP_PAGE_TRIES or result.outcome != Outcome.TRANSIENT:
                raise
            time.sleep(backoff_delay(failures - 1, base=0.2, cap=2.0))
        else:
            _outcome_record(operation, _OK, waited=timer.waited())
            return page


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
        page = _list_page(
            stripe.Transfer.list, starting_after=last_id, transfer_group=transfer_group(job_id)
        )
        for transfer in page.data:
            entry_id = str(transfer.to_dict().get("metadata", {}).get("entry_id", ""))
            if entry_id.isdigit() and int(entry_id) in entry_ids:
                found[int(entry_id)] = transfer.id
        if not page.has_more or not page.data:
            break
        last_id = page.data[-1].id
    return found


# -- Connect accounts (Express) ----------------------------------------------------------------


def account_idempotency_key(user_id: int) -> str:
    """One key per user: however often creation is retried, Stripe makes one account."""
    return f"account:{user_id}"


@dataclass(frozen=True, slots=True)
class AccountState:
    id: str
    payouts_enabled: bool
    requirements_due: list[str]


def account_state_parse(account: Any) -> AccountState:
    """An account object (from the API or from an event's ``data.object``) as this app needs it."""
    data = account.to_dict() if hasattr(account, "to_dict") else dict(account)
    due = (data.get("requirements") or {}).get("currently_due") or []
    return AccountState(
        id=str(data["id"]),
        payouts_enabled=bool(data.get("payouts_enabled")),
        requirements_due=[str(item) for item in due],
    )


def _unavailable(exc: stripe.StripeError) -> StripeUnavailable:
    return StripeUnavailable(f"Stripe answered: {error_classify(exc).reason}.")


def account_create(*, user_id: int) -> AccountState:
    """Create the user's Express account, asking Stripe for the ``transfers`` capability (all
    a platform paying out needs), with the user's id in metadata.

    Always with the key ``account:<user_id>``: a retry after a timeout or a lost answer gets
    the same account back, never a second one (for Stripe's 24 hours of key memory; older
    requests are looked up with ``account_find`` first). Raises ``StripeUnavailable``.
    """
    _configure()
    timer = CallTimer()
    try:
        account = stripe.Account.create(
            api_key=settings.STRIPE_API_KEY,
            idempotency_key=account_idempotency_key(user_id),
            type="express",
            capabilities={"transfers": {"requested": True}},
            metadata={"user_id": str(user_id)},
        )
    except stripe.StripeError as exc:
        _outcome_record(
            "account_create", error_classify(exc), waited=timer.waited(), user_id=user_id
        )
        raise _unavailable(exc) from exc
    _outcome_record("account_create", _OK, waited=timer.waited(), user_id=user_id)
    return account_state_parse(account)


def account_find(*, user_id: int) -> AccountState | None:
    """The platform's account whose ``metadata.user_id`` is this user, or None.

    Walks the platform's connected accounts, newest first, a rate-limited page of 100 at a
    time: only for a creation first requested longer ago than Stripe keeps idempotency keys.
    Raises ``StripeUnavailable``.
    """
    _configure()
    last_id: str | None = None
    try:
        while True:
            page = _list_page(stripe.Account.list, starting_after=last_id)
            for account in page.data:
                metadata = account.to_dict().get("metadata") or {}
                if str(metadata.get("user_id", "")) == str(user_id):
                    return account_state_parse(account)
            if not page.has_more or not page.data:
                return None
            last_id = page.data[-1].id
    except stripe.StripeError as exc:
        raise _unavailable(exc) from exc


def account_onboarding_link(*, account_id: str) -> str:
    """A fresh, single-use Account Link URL that sends the user through Stripe's hosted
    onboarding (``account_onboarding``), back to ``STRIPE_CONNECT_RETURN_URL`` when done or to
    ``STRIPE_CONNECT_REFRESH_URL`` when the link expired. Raises ``StripeUnavailable``."""
    _configure()
    timer = CallTimer()
    try:
        link = stripe.AccountLink.create(
            api_key=settings.STRIPE_API_KEY,
            account=account_id,
            type="account_onboarding",
            return_url=settings.STRIPE_CONNECT_RETURN_URL,
            refresh_url=settings.STRIPE_CONNECT_REFRESH_URL,
        )
    except stripe.StripeError as exc:
        _outcome_record("account_link_create", error_classify(exc), waited=timer.waited())
        raise _unavailable(exc) from exc
    # The link itself is a bearer credential for the user's onboarding: never logged.
    _outcome_record("account_link_create", _OK, waited=timer.waited())
    return str(link.url)
