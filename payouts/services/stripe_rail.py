"""The Stripe rail: each entry of a ``rail=stripe`` job becomes one Stripe Connect transfer.

How an entry is paid exactly once (DESIGN.md section 4, step 4):

1. **Claim** (short transaction, ``FOR UPDATE SKIP LOCKED``): up to ``STRIPE_CLAIM_SIZE``
   entries that are ``pending``, ``retryable`` and due, or ``processing`` with an expired lease
   (their worker died) become ``processing`` with ``lease_until`` and ``attempt_count + 1``.
2. **Call Stripe outside any transaction**, its request taking a token from the Redis bucket
   shared by all workers once its connection is open (``stripe_http``), with the idempotency
   key ``payout:<entry_id>``: whatever happened to an earlier attempt (a timeout, a lost
   response, a worker killed before it saved the result), the same key gives back the same
   transfer instead of a second one. Stripe forgets keys after 24 hours, so an entry first
   attempted more than 23 hours ago is first looked up in its job's transfer group (by
   ``metadata.entry_id``) and only created when Stripe has none.
3. **Record** (second short transaction per entry): success -> ``completed`` with the
   ``stripe_transfer_id``, the ledger transfer escrow -> ``stripe_clearing`` (key
   ``payout:<entry_id>``, unique) and the job counters; a transient error -> ``retryable`` with
   ``next_attempt_at`` after exponential backoff with jitter; a permanent error or the last
   allowed attempt -> ``failed`` with a DeadLetter row (subject ``payout_entry:<id>``), but
   whenever this attempt or an earlier one may have reached Stripe, only after Stripe's
   transfer list shows that no lost answer hid a transfer for it (if the list cannot be read,
   the entry stays ``retryable``). A winner without an enabled connected account fails with
   ``stripe_account_not_connected`` without any call; their money stays in escrow until
   their account is enabled (``account.updated`` queues the entry again) or staff retry.
   Each exchange with Stripe is appended to the entry's history (``PayoutAttempt``) in the
   transaction that records its result.
4. **Cancel** (``stripe_entries_reconcile``): an entry of a cancelled job that may have
   reached Stripe (``retryable``, or ``processing`` with an expired lease) is looked up in
   the transfer list before anything else: found, it is recorded as paid; only entries Stripe
   never saw become ``cancelled``. Until then the job counts them as uncertain.

A result is recorded only by the attempt that owns the entry (``status = processing`` and its
own ``attempt_count``), except a success, which is the truth whoever learns it. The batch task
loops over claims for ``STRIPE_BATCH_SECONDS``, waits in-process for retries that fall due
within that time, and re-sends itself while work remains; the engine's watchdog restarts jobs
whose batches all died or whose retries are further off (the claim refreshes the job's
``updated_at``, so a job still being worked on is not restarted on top of its batches).
"""

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField
from django.db.models.expressions import RawSQL

from core.db import prepared_cursor
from core.errors import NotFound
from core.queues import send_task
from core.retry import backoff_delay
from core.services import dead_letter_record
from ledger.models import Account, Transfer
from ledger.services import posting_ctes, posting_errors, system_account_id
from payouts.metrics import payouts_paid_count
from payouts.models import PayoutAttempt, PayoutEntry, PayoutJob
from payouts.services.connected_accounts import payout_destinations
from payouts.services.engine import (
    BATCH_TASKS,
    payout_job_counters_bump,
    payout_job_finalize,
    payout_progress_publish,
)
from payouts.services.stripe_client import (
    ACCOUNT_NOT_CONNECTED,
    CallTimer,
    Outcome,
    TransferResult,
    error_classify,
    transfer_create,
    transfers_find,
)

logger = logging.getLogger(__name__)

# Stripe keeps idempotency keys for 24 hours; an hour of margin for slow retries.
RECONCILE_AFTER = timedelta(hours=23)
STRIPE_RAIL_TASK = BATCH_TASKS[PayoutJob.Rail.STRIPE]
ENTRY_RETRY_TASK = "payouts.tasks.payout_entry_retry_task"


def _db_clock_plus(seconds: float) -> RawSQL:
    """The database's clock (not the transaction's start) plus ``seconds``.

    Every lease and due time is set and compared on this one clock, so workers with skewed
    clocks agree on when an entry falls due.
    """
    return RawSQL("statement_timestamp() + make_interval(secs => %s)", [seconds], DateTimeField())


@dataclass(frozen=True, slots=True)
class ClaimedEntry:
    id: int
    user_id: int
    amount: int
    attempt: int
    # First attempted more than RECONCILE_AFTER ago (by the database clock).
    reconcile: bool


# The job must be running (a pause or cancel stops new claims at once); its updated_at is
# refreshed so the watchdog sees the job being worked on. Retries that fell due and leases that
# ran out (their worker died) come first, found through the indexes on their own columns
# wherever they are in the job; pending entries follow in id order after the caller's keyset
# position, so a claim reads the job's entries from where its batch left off rather than from
# the first (no index holds the status: ``PayoutEntry.Meta.indexes``).
_CLAIM_SQL = """
WITH job AS (
    UPDATE payouts_payoutjob SET updated_at = statement_timestamp()
    WHERE id = %(job_id)s AND status = 'running'
    RETURNING id
), due AS (
    SELECT e.id, false AS fresh FROM payouts_payoutentry AS e
    WHERE e.job_id = (SELECT id FROM job)
      AND ((e.status = 'retryable' AND e.next_attempt_at <= statement_timestamp())
           OR (e.status = 'processing' AND e.lease_until < statement_timestamp()))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), fresh AS (
    SELECT e.id, true AS fresh FROM payouts_payoutentry AS e
    WHERE e.job_id = (SELECT id FROM job) AND e.status = 'pending' AND e.id > %(after_id)s
    ORDER BY e.id
    LIMIT %(limit)s - (SELECT count(*) FROM due)
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, fresh FROM due UNION ALL SELECT id, fresh FROM fresh
)
UPDATE payouts_payoutentry AS e
SET status = 'processing',
    lease_until = statement_timestamp() + make_interval(secs => %(lease)s),
    attempt_count = e.attempt_count + 1,
    first_attempt_at = coalesce(e.first_attempt_at, statement_timestamp()),
    next_attempt_at = NULL
FROM picked
WHERE e.id = picked.id
RETURNING e.id, e.user_id, e.amount, e.attempt_count,
          e.first_attempt_at < statement_timestamp() - make_interval(secs => %(reconcile_after)s),
          picked.fresh
"""

# When nothing is claimable: whether anything is still open, and when the next thing falls due.
# (A pending entry that was not claimable is being claimed by another batch right now.) It
# reads the job's entries, as the claim from the job's first entry just before it did: a
# batch gets here only once nothing is left to claim.
_NEXT_DUE_SQL = """
SELECT EXISTS (SELECT 1 FROM payouts_payoutjob WHERE id = %s AND status = 'running'),
       count(*),
       extract(epoch FROM min(CASE status WHEN 'pending' THEN statement_timestamp()
                                          WHEN 'retryable' THEN next_attempt_at
                                          ELSE lease_until END) - statement_timestamp())::float
FROM payouts_payoutentry
WHERE job_id = %s AND status IN ('pending', 'retryable', 'processing')
"""


def stripe_entries_claim(
    *, job_id: int, after_id: int = 0
) -> tuple[list[ClaimedEntry], float, int]:
    """Lease up to ``STRIPE_CLAIM_SIZE`` workable entries of a running job (one transaction):
    retries that fell due and expired leases first, then pending entries with ids above
    ``after_id``.

    Returns the entries, when their lease ends on this process's monotonic clock, and the
    keyset position for the next claim (the highest pending entry claimed, or ``after_id``).
    Concurrent batches never claim the same entry (SKIP LOCKED); an entry whose worker died is
    claimable again once its lease expires. Nothing is claimed unless the job is ``running``.
    A pending entry behind the position (one a concurrent claim skipped past, then rolled
    back) is found by a claim from 0, which the batch makes before it decides the job is idle.
    """
    lease_end = time.monotonic() + settings.STRIPE_LEASE_SECONDS
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "job_id": job_id,
                "after_id": after_id,
                "limit": settings.STRIPE_CLAIM_SIZE,
                "lease": settings.STRIPE_LEASE_SECONDS,
                "reconcile_after": RECONCILE_AFTER.total_seconds(),
            },
        )
        rows = sorted(cursor.fetchall())
    position = max((row[0] for row in rows if row[-1]), default=after_id)
    return [ClaimedEntry(*row[:-1]) for row in rows], lease_end, position


def _release(entries: list[ClaimedEntry]) -> None:
    """Give back claimed entries that were never sent (the lease would run out first)."""
    for entry in entries:
        PayoutEntry.objects.filter(
            pk=entry.id, status=PayoutEntry.Status.PROCESSING, attempt_count=entry.attempt
        ).update(attempt_count=entry.attempt - 1, lease_until=_db_clock_plus(0))


def _attempt_outcome(result: TransferResult) -> str:
    if result.outcome == Outcome.PAID:
        lookup = result.call is not None and result.call.lookup
        return PayoutAttempt.Outcome.RECONCILED if lookup else PayoutAttempt.Outcome.SUCCEEDED
    if result.outcome == Outcome.TRANSIENT:
        return PayoutAttempt.Outcome.TRANSIENT
    return PayoutAttempt.Outcome.PERMANENT


# A PayoutAttempt's fields after its entry and attempt number, in the order of
# ``_attempt_values``.
_ATTEMPT_FIELDS = (
    "started_at",
    "finished_at",
    "outcome",
    "error_code",
    "http_status",
    "stripe_request_id",
    "transfer_id",
    "duration_ms",
)


def _attempt_values(results: Sequence[TransferResult]) -> list[tuple]:
    """The history rows (``_ATTEMPT_FIELDS``) of the exchanges behind a result; results made
    without any request have none."""
    return [
        (
            result.call.started_at,
            result.call.finished_at,
            _attempt_outcome(result),
            result.reason,
            result.call.http_status,
            result.call.request_id[:255],
            result.transfer_id,
            result.call.duration_ms,
        )
        for result in results
        if result.call is not None
    ]


def payout_attempts_record(
    *, entry: ClaimedEntry, results: Sequence[TransferResult]
) -> list[PayoutAttempt]:
    """Append the Stripe exchanges behind an entry's result to its history (results made
    without any request add nothing). Call it in the transaction that records the result."""
    return PayoutAttempt.objects.bulk_create(
        [
            PayoutAttempt(
                entry_id=entry.id,
                attempt=entry.attempt,
                **dict(zip(_ATTEMPT_FIELDS, values, strict=True)),
            )
            for values in _attempt_values(results)
        ]
    )


@dataclass(frozen=True, slots=True)
class PayoutAccounts:
    """The two accounts of a Stripe payout's ledger transfer; neither ever changes for a job."""

    escrow_id: int
    clearing_id: int


def payout_accounts(job_id: int) -> PayoutAccounts:
    return PayoutAccounts(
        escrow_id=job_escrow_id(job_id),
        clearing_id=system_account_id(Account.Kind.STRIPE_CLEARING),
    )


# A transfer Stripe made, recorded in one statement, its rows locked in the engine's order
# (the entry, the job row, then both accounts in id order, as ``transfers_post`` locks them):
# the exchanges appended to the entry's history, the entry ``completed`` if it is
# ``processing`` or ``retryable``, the job's counters, and the ledger transfer escrow ->
# ``stripe_clearing`` under the key ``payout:<entry_id>``. An entry recorded already gets its
# history and nothing else. The select list reads ``marked``, then ``locked`` (which waits for
# ``counted``); the posting runs last, over accounts already locked.
_RECORD_PAID_SQL = f"""
WITH attempts AS (
    INSERT INTO payouts_payoutattempt (entry_id, attempt, {", ".join(_ATTEMPT_FIELDS)})
    SELECT %(entry_id)s, %(attempt)s, h.*
    FROM unnest(%(started_at)s::timestamptz[], %(finished_at)s::timestamptz[],
                %(outcome)s::text[], %(error_code)s::text[], %(http_status)s::int[],
                %(stripe_request_id)s::text[], %(transfer_id)s::text[],
                %(duration_ms)s::int[]) AS h
), marked AS (
    UPDATE payouts_payoutentry
    SET status = 'completed', stripe_transfer_id = %(stripe_transfer_id)s,
        completed_at = statement_timestamp(), lease_until = NULL, next_attempt_at = NULL,
        failure_reason = '', last_error = ''
    WHERE id = %(entry_id)s AND status IN ('processing', 'retryable')
    RETURNING id, amount
), counted AS (
    UPDATE payouts_payoutjob AS j
    SET completed_count = j.completed_count + 1, paid_amount = j.paid_amount + m.amount,
        updated_at = now()
    FROM marked AS m
    WHERE j.id = %(job_id)s
    RETURNING m.id, m.amount
), locked AS (
    SELECT id FROM payouts_account
    WHERE id = ANY(%(accounts)s::bigint[]) AND EXISTS (SELECT FROM counted)
    ORDER BY id
    FOR NO KEY UPDATE
), {
    posting_ctes(
        "SELECT %(escrow_id)s::bigint, %(clearing_id)s::bigint, c.amount, %(kind)s, "
        "'payout:' || c.id FROM counted AS c"
    )
}
SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM counted),
       (SELECT count(*) FROM locked)
"""  # noqa: S608 - names from this module, values as parameters


def stripe_entry_record_paid(
    *,
    job_id: int,
    entry: ClaimedEntry,
    transfer_id: str,
    calls: Sequence[TransferResult] = (),
    accounts: PayoutAccounts | None = None,
) -> bool:
    """Record a transfer Stripe made for an entry; False if it was recorded already.

    One statement (``_RECORD_PAID_SQL``) in a transaction of its own: entry ``completed``
    with the transfer id, job counters, ledger transfer escrow -> ``stripe_clearing`` (unique
    key ``payout:<entry_id>``, so at most one per entry), and the exchanges (``calls``) in the
    entry's history. Accepted from whichever attempt learns it while the entry is
    ``processing`` or ``retryable`` (a stale worker's success is still a success). The job
    row, which every batch of the job queues on, is held for that one statement and the
    commit. ``accounts`` (``payout_accounts``) saves a batch looking them up again for each
    entry.
    """
    accounts = accounts or payout_accounts(job_id)
    history = _attempt_values(calls)
    columns = list(zip(*history, strict=True)) if history else [()] * len(_ATTEMPT_FIELDS)
    params: dict[str, Any] = {
        "entry_id": entry.id,
        "attempt": entry.attempt,
        **{name: list(values) for name, values in zip(_ATTEMPT_FIELDS, columns, strict=True)},
        "stripe_transfer_id": transfer_id,
        "job_id": job_id,
        "accounts": sorted([accounts.escrow_id, accounts.clearing_id]),
        "escrow_id": accounts.escrow_id,
        "clearing_id": accounts.clearing_id,
        "kind": Transfer.Kind.STRIPE_PAYOUT,
    }
    with posting_errors(), transaction.atomic(durable=True), prepared_cursor() as cursor:
        cursor.execute(_RECORD_PAID_SQL, params)
        marked, counted, locked = cursor.fetchone()
        if marked and (counted, locked) != (1, 2):
            # Rolls back: an entry is never completed without its counters and its transfer.
            raise NotFound(
                f"Entry {entry.id} was paid, but {counted} of its job's rows and {locked} of "
                f"the accounts {params['accounts']} exist.",
                code="account_not_found",
            )
        if marked:
            transaction.on_commit(
                partial(
                    payouts_paid_count, rail=PayoutJob.Rail.STRIPE, entries=1, amount=entry.amount
                )
            )
    return bool(marked)


def job_escrow_id(job_id: int) -> int:
    return PayoutJob.objects.values_list("challenge__escrow_id", flat=True).get(pk=job_id)


def _would_fail(entry: ClaimedEntry, result: TransferResult) -> bool:
    exhausted = entry.attempt >= settings.STRIPE_MAX_ATTEMPTS
    return result.outcome == Outcome.PERMANENT or (
        result.outcome == Outcome.TRANSIENT and exhausted
    )


def stripe_entry_record_failure(
    *,
    job_id: int,
    entry: ClaimedEntry,
    result: TransferResult,
    calls: Sequence[TransferResult] = (),
    unverified: bool = False,
) -> str:
    """Record a failed attempt; return the entry's new status ('' if the attempt was stale).

    Transient and attempts left -> ``retryable`` with ``next_attempt_at`` after exponential
    backoff with jitter (``STRIPE_RETRY_BACKOFF_BASE``: 5, 10, 20, 40 s ...); so is any
    failure that is ``unverified`` (Stripe's transfer list could not be read to prove that no
    transfer exists: failing it would risk stranding a paid entry). Permanent, or the
    ``STRIPE_MAX_ATTEMPTS``-th attempt -> ``failed``, job counter, and a DeadLetter row
    (subject ``payout_entry:<id>``). One transaction, with the exchanges (``calls``) in the
    entry's history. Only the attempt that owns the entry (still ``processing`` with its
    attempt number) changes it.
    """
    owned = PayoutEntry.objects.filter(
        pk=entry.id, status=PayoutEntry.Status.PROCESSING, attempt_count=entry.attempt
    )
    if unverified or not _would_fail(entry, result):
        delay = backoff_delay(
            entry.attempt - 1,
            base=settings.STRIPE_RETRY_BACKOFF_BASE,
            cap=settings.STRIPE_RETRY_BACKOFF_MAX,
        )
        with transaction.atomic(durable=True):
            payout_attempts_record(entry=entry, results=calls)
            updated = owned.update(
                status=PayoutEntry.Status.RETRYABLE,
                next_attempt_at=_db_clock_plus(delay),
                lease_until=None,
                failure_reason=result.reason,
                last_error=result.error[:10_000],
            )
        return PayoutEntry.Status.RETRYABLE if updated else ""
    reason = "stripe_attempts_exhausted" if result.outcome == Outcome.TRANSIENT else result.reason
    with transaction.atomic(durable=True):
        payout_attempts_record(entry=entry, results=calls)
        updated = owned.update(
            status=PayoutEntry.Status.FAILED,
            lease_until=None,
            next_attempt_at=None,
            failure_reason=reason,
            last_error=result.error[:10_000],
        )
        if not updated:
            return ""
        payout_job_counters_bump(job_id=job_id, failed=1)
        dead_letter_record(
            # Unique per failure: an entry retried by staff that fails again gets a new row.
            task_id=f"payout_entry:{entry.id}:{uuid.uuid4().hex}",
            # Replaying the letter retries this entry (and only it).
            task_name=ENTRY_RETRY_TASK,
            args=[job_id, entry.id],
            kwargs={},
            queue="payouts",
            error=f"{reason}: {result.error}",
            traceback="",
            attempts=entry.attempt,
            subject=f"payout_entry:{entry.id}",
        )
    return PayoutEntry.Status.FAILED


def _transfers_lookup(*, job_id: int, entry_ids: set[int]) -> dict[int, TransferResult]:
    """What Stripe itself holds for these entries: PAID for each it has a transfer for.

    When Stripe cannot be asked, every entry gets the lookup's (classified) error instead, so
    that nothing is created blind.
    """
    if not entry_ids:
        return {}
    timer = CallTimer()
    try:
        found = transfers_find(job_id=job_id, entry_ids=entry_ids)
    except stripe.StripeError as exc:
        failed = error_classify(exc)
        call = timer.call(http_status=exc.http_status, request_id=exc.request_id, lookup=True)
        return dict.fromkeys(
            entry_ids,
            TransferResult(failed.outcome, reason=failed.reason, error=failed.error, call=call),
        )
    call = timer.call(http_status=200, request_id="", lookup=True)
    return {
        entry_id: TransferResult(Outcome.PAID, transfer_id=tr, call=call)
        for entry_id, tr in found.items()
    }


def _attempt(*, job_id: int, entry: ClaimedEntry, destination: str | None) -> TransferResult:
    """One transfer request, or the not-connected failure without any request."""
    if destination is None:
        return TransferResult(
            Outcome.PERMANENT,
            reason=ACCOUNT_NOT_CONNECTED,
            error="The winner has no Stripe account with payouts enabled.",
        )
    return transfer_create(
        entry_id=entry.id,
        job_id=job_id,
        amount=entry.amount,
        currency=settings.STRIPE_CURRENCY,
        destination=destination,
    )


def _stripe_entries_pay(*, job_id: int, entries: list[ClaimedEntry], lease_end: float) -> None:
    """Send each claimed entry to Stripe (outside any transaction) and record each outcome.

    Entries the lease would not cover any more (a slow rate limit, timeouts) are released
    unsent rather than sent late, so no other worker re-claims an entry this one still calls.
    """
    destinations = payout_destinations(user_ids=[e.user_id for e in entries])
    accounts = payout_accounts(job_id)
    # Entries first tried more than RECONCILE_AFTER ago: Stripe may have forgotten their key,
    # so its own record decides before any create. first_attempt_at survives retry-failed
    # (which resets attempt_count), so an entry retried a day later is still looked up.
    known = _transfers_lookup(job_id=job_id, entry_ids={e.id for e in entries if e.reconcile})
    for index, entry in enumerate(entries):
        # A request started before this point ends (answered or timed out) inside the lease.
        if time.monotonic() + settings.STRIPE_TIMEOUT > lease_end:
            _release(entries[index:])
            return
        looked = known.get(entry.id)
        result = looked or _attempt(
            job_id=job_id, entry=entry, destination=destinations.get(entry.user_id)
        )
        calls = [result]
        # This attempt (no answer) or an earlier one (a lost answer, a dead worker) may have
        # made a transfer: an entry is marked failed only if Stripe's list has none for it.
        may_have_reached = result.outcome == Outcome.TRANSIENT or entry.attempt > 1
        unverified = False
        if _would_fail(entry, result) and (looked is not None or may_have_reached):
            if looked is None:
                looked = _transfers_lookup(job_id=job_id, entry_ids={entry.id}).get(entry.id)
                calls += [looked] if looked is not None else []
            if looked is not None and looked.outcome == Outcome.PAID:
                result = looked
            else:
                unverified = looked is not None  # the list itself could not be read
        if result.outcome == Outcome.PAID:
            stripe_entry_record_paid(
                job_id=job_id,
                entry=entry,
                transfer_id=result.transfer_id,
                calls=calls,
                accounts=accounts,
            )
        else:
            stripe_entry_record_failure(
                job_id=job_id, entry=entry, result=result, calls=calls, unverified=unverified
            )


def payout_batch_stripe(*, job_id: int, budget: float | None = None) -> int:
    """Work on a running stripe-rail job for up to ``budget`` seconds (``STRIPE_BATCH_SECONDS``
    by default); return how many entries it attempted.

    Claims, pays and records entries one claim at a time (see the module docstring). When
    nothing is claimable it finalizes the job if every entry is terminal, or waits in-process
    for the next retry or lease expiry if that is due within ``STRIPE_BATCH_SECONDS`` (the
    5, 10 and 20 s backoffs), or stops and leaves later retries to the watchdog. When its budget
    runs out with work left or due soon, it sends itself again (no countdown: a fresh message
    with a full budget). Idempotent and crash-safe: any number of copies may run; a copy
    killed at any line leaves at most a lease that expires.
    """
    deadline = time.monotonic() + (settings.STRIPE_BATCH_SECONDS if budget is None else budget)
    attempted = 0
    after_id = 0
    while time.monotonic() < deadline:
        entries, lease_end, position = stripe_entries_claim(job_id=job_id, after_id=after_id)
        if entries:
            after_id = position
            _stripe_entries_pay(job_id=job_id, entries=entries, lease_end=lease_end)
            attempted += len(entries)
            payout_progress_publish(job_id=job_id)
            continue
        if after_id:
            after_id = 0  # nothing after the position: look once from the job's first entry
            continue
        with connection.cursor() as cursor:
            cursor.execute(_NEXT_DUE_SQL, [job_id, job_id])
            running, open_entries, wait = cursor.fetchone()
        if not running:
            return attempted
        if not open_entries:
            payout_job_finalize(job_id=job_id)
            payout_progress_publish(job_id=job_id, force=True)
            return attempted
        if wait > settings.STRIPE_BATCH_SECONDS:
            return attempted  # far off: the watchdog restarts the job when it is due
        if time.monotonic() + wait > deadline:
            break  # a fresh message waits for it with a full budget
        time.sleep(max(wait, 0.05))
    send_task(STRIPE_RAIL_TASK, args=[job_id])
    return attempted


# Entries of a cancelled job that may have reached Stripe: a retryable one (its last answer
# may have been lost), or a processing one whose worker's lease ran out (it may have died
# after Stripe answered). A processing entry with a live lease is left to its worker. Each
# state is found through the index of its own column (``payouts.models.entries_in``).
_UNCERTAIN_SQL = """
SELECT e.id, e.user_id, e.amount, e.attempt_count, false
FROM payouts_payoutentry AS e
WHERE e.job_id = %s
  AND EXISTS (SELECT 1 FROM payouts_payoutjob AS j WHERE j.id = e.job_id AND j.status = 'cancelled')
  AND ((e.status = 'retryable' AND e.next_attempt_at IS NOT NULL)
       OR (e.status = 'processing' AND e.lease_until < statement_timestamp()))
ORDER BY e.id
"""

# Cancel exactly the entries Stripe was asked about, if nobody touched them since (same state,
# same attempt number); entries, then the job row: the engine's lock order.
_CANCEL_UNSEEN_SQL = """
WITH cancelled AS (
    UPDATE payouts_payoutentry AS e
    SET status = 'cancelled', lease_until = NULL, next_attempt_at = NULL
    FROM unnest(%s::bigint[], %s::int[]) AS u(id, attempt)
    WHERE e.id = u.id AND e.attempt_count = u.attempt
      AND (e.status = 'retryable'
           OR (e.status = 'processing' AND e.lease_until < statement_timestamp()))
    RETURNING 1
)
UPDATE payouts_payoutjob SET cancelled_count = cancelled_count + (SELECT count(*) FROM cancelled),
                             updated_at = now()
WHERE id = %s
RETURNING (SELECT count(*) FROM cancelled)
"""


@dataclass(frozen=True, slots=True)
class Reconciliation:
    paid: int
    cancelled: int
    # Still uncertain: Stripe could not be asked (retried later by the watchdog).
    uncertain: int


def stripe_entries_reconcile(*, job_id: int) -> Reconciliation:
    """Settle the uncertain entries of a cancelled stripe-rail job by asking Stripe first.

    Each entry that may have reached Stripe (``retryable``, or ``processing`` with an expired
    lease) is looked up in the job's transfer group by ``metadata.entry_id``: a transfer found
    is recorded as paid (``stripe_entry_record_paid``: ledger transfer, counters, a
    ``reconciled`` attempt); the others -- Stripe never saw them -- become ``cancelled``. When
    Stripe cannot be asked, nothing changes. Idempotent; sent after a cancel and by the
    watchdog while a cancelled job has open entries.
    """
    with connection.cursor() as cursor:
        cursor.execute(_UNCERTAIN_SQL, [job_id])
        entries = [ClaimedEntry(*row) for row in cursor.fetchall()]
    if not entries:
        return Reconciliation(0, 0, 0)
    known = _transfers_lookup(job_id=job_id, entry_ids={e.id for e in entries})
    if any(result.outcome != Outcome.PAID for result in known.values()):
        logger.warning("job %s: Stripe could not be asked about %s entries", job_id, len(entries))
        return Reconciliation(0, 0, len(entries))
    paid = 0
    accounts = payout_accounts(job_id)
    for entry in entries:
        if entry.id in known:
            found = known[entry.id]
            paid += stripe_entry_record_paid(
                job_id=job_id,
                entry=entry,
                transfer_id=found.transfer_id,
                calls=[found],
                accounts=accounts,
            )
    unseen = [e for e in entries if e.id not in known]
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(
            _CANCEL_UNSEEN_SQL, [[e.id for e in unseen], [e.attempt for e in unseen], job_id]
        )
        cancelled = int(cursor.fetchone()[0])
    return Reconciliation(paid, cancelled, len(entries) - paid - cancelled)
