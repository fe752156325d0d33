"""The payout job engine: settle a job, create its entries in slices and pay them (as they
are created on the ledger rail, in batches on the Stripe rail), finalize, notify, watch.

State machines (DESIGN.md section 4)::

    PayoutJob:   queued -> expanding -> running <-> paused
                 running -> completed | completed_with_failures      (finalize)
                 running -> failed             (finalize failed for good: LedgerMismatch)
                 queued | expanding | running | paused -> cancelled  (staff)
                 completed_with_failures | failed -> running         (staff retry)
    PayoutEntry: (none) -> completed     (ledger rail: created paid by its slice's statement)
                 pending -> completed     (ledger rail, a batch: entries created while the job
                                          was paused or cancelled, or none found to pay)
                 pending -> processing -> completed | retryable | failed   (stripe rail)
                 retryable -> processing ...
                 failed -> pending                                   (retry failed entries)
                 pending | retryable -> cancelled                    (job cancelled; on the
                 Stripe rail a retryable or expired processing entry only after Stripe's
                 transfer list shows none for it, else -> completed)

Who moves what:

- ``payout_job_expand`` (worker): ``queued -> expanding`` in a short transaction (so staff see
  it), then under the job row lock the settlement's terms (``settlement_terms``: pools, fee,
  who gets a leftover unit), the job's totals and ``running`` commit together. The entries
  are then created slice by slice (``payout_job_expand_chunk``, ``PAYOUT_EXPAND_CHUNK`` stakes
  per transaction, each slice sending the next), and every slice starts batches at its own
  first entry: a million-entry job pays its first slice while the later ones are created.
  ``total_entries`` is known from the terms, so the job cannot finish before every slice
  exists. That is the Stripe rail's expansion; on the ledger rail every entry is created
  already paid, by the statement that pays it (``_ledger_expand``): the expansion task pays
  a small first slice (the start) in its own transaction -- a job of up to
  ``PAYOUT_START_SIZE`` winners is paid and finalized by its expansion alone -- and sends
  the rest as slices of ``batch_size`` stakes in ``parallelism`` chains
  (``payout_job_slice``), each slice one transaction that creates its entries, posts their
  transfers and wallet credits, books them on the job and the escrow, and sends the next
  slice of its chain.
- Batches are rail-specific; ``payout_batches_enqueue`` is the one place that picks the batch
  task by ``job.rail``. Every rail's batch task takes the job id as its first argument.
  ``payout_batch_ledger`` (on the ledger rail, what pays entries created pending: while the
  job was paused, and on resume or a watchdog restart) claims pending entries (``FOR UPDATE
  SKIP LOCKED``, keyset by id so that dead index entries of already-paid rows are not
  rescanned), posts their ledger transfers ``payout:<entry_id>`` escrow -> wallet and the
  wallet credits in one statement, marks them ``completed``, bumps the job's counters and
  debits the escrow -- one transaction, so a crash at any line pays a whole batch or none of
  it. The entry never shows ``processing`` on this rail. Then it sends itself again (after
  commit) while entries are open; the batch that pays the last open entries, or one that
  finds nothing, tries to finalize.
- ``payout_job_counters_bump`` and ``payout_job_finalize`` are the rail-independent helpers
  (the Stripe rail calls them too). The counters are the truth about progress: an entry is
  terminal when it is counted in ``completed_count``, ``failed_count`` or ``cancelled_count``,
  so "nothing pending, processing or retryable" is ``completed + failed + cancelled == total``,
  an O(1) check. Each rail must bump ``completed``/``failed`` in the transaction that makes an
  entry terminal.
- ``payout_job_finalize``: fee transfer escrow -> platform_fees (``fee:<job_id>``, the fee the
  settlement computed, also when some entries failed), job ``completed`` or
  ``completed_with_failures``, challenge ``resolving -> completed`` (a cancelled challenge
  stays cancelled), escrow checked to hold exactly the failed entries' money (0 when none
  failed); after commit, ``payout_job_notify`` tells every staker the outcome (paid,
  refunded, lost, account needed, failed) in one statement.
- ``payout_watchdog`` (beat, every minute): re-sends the expansion of jobs stuck in
  ``queued``/``expanding`` or missing entries, and batches of ``running`` jobs with no
  progress for a while (which also finalizes a job whose last batch died before finalizing,
  and gives the Stripe rail's due retries and expired leases a batch), cancels the leftover
  entries of a job whose cancellation was interrupted, and re-sends lost notifications.

Pause and cancel need no cooperation from running batches or slices: both bump the job
counters only ``WHERE status = 'running'``; a batch rolls back whole if the job was paused or
cancelled meanwhile, a slice creates its entries pending instead; so no entry is paid after a
pause or cancel commits.

Lock order, everywhere: entries -> wallets -> job row -> escrow and system accounts; but the
expansion holds its job's row from its start (no batch of the job runs before the start has
committed, and a deadlock with another job's batch over a shared wallet is retried like any).
Fairness: a job's start (its expansion with a small first slice, paid there on the ledger
rail, by a small first batch on the Stripe rail) is sent ahead of the work already queued
(``EXPAND_PRIORITY``, ``START_PRIORITY``), so a job resolved while others pay does not wait
for them to finish; everything that continues a job (later slices, every follow-up batch)
goes to the back of the ``CONTINUE_PRIORITY`` list, so the slices and batches of several
jobs take turns on the workers. Priorities change the order only: any of these messages may
be lost or run twice, as before.
"""

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache, partial
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from challenges.models import Challenge
from core.errors import InsufficientFunds, NotFound
from core.queues import send_task
from core.redis_client import redis_from_url
from ledger.models import Account, Transfer
from ledger.services import system_account_id, transfer_post
from payouts.metrics import JOBS_FINISHED, payouts_paid_count
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.settlement import (
    SLICE_FIGURES,
    Chunk,
    SettlementTerms,
    payout_entries_insert,
    settlement_terms,
    slice_entries_ctes,
    slice_params,
    slice_starts,
)
from payouts.services.stripe_client import ACCOUNT_NOT_CONNECTED

logger = logging.getLogger(__name__)

EXPAND_TASK = "payouts.tasks.payout_job_expand_task"
EXPAND_CHUNK_TASK = "payouts.tasks.payout_job_expand_chunk_task"
SLICE_TASK = "payouts.tasks.payout_job_slice_task"
NOTIFY_TASK = "payouts.tasks.payout_job_notify_task"
RECONCILE_TASK = "payouts.tasks.payout_job_reconcile_task"
BATCH_TASKS: dict[str, str] = {
    PayoutJob.Rail.LEDGER: "payouts.tasks.payout_batch_ledger_task",
    PayoutJob.Rail.STRIPE: "payouts.tasks.payout_batch_stripe_task",
}
# Expansions at least this large refresh the planner's statistics of the entries table before
# the batches start, so their claim query never runs on a plan made for an empty table.
ANALYZE_ENTRIES_THRESHOLD = 50_000
PROGRESS_INTERVAL_MS = 1_000
# Message priorities on the payouts queue (kombu's Redis transport keeps one list per priority
# step of 0, 3, 6, 9, and a worker pops the lists in that order). A job's start goes ahead of
# the work already queued: a Stripe job's small first batch first (START_PRIORITY), then the
# expansions of small first slices (EXPAND_PRIORITY; a ledger job's pays its slice itself),
# so each expanded job pays before the next one expands. Everything that continues a job
# (later slices, follow-up batches) queues at CONTINUE_PRIORITY in FIFO order, so the
# continuing jobs take turns. Unprioritized messages (the watchdog's restarts, staff resume
# and retry) are START_PRIORITY: they unstick a job.
# This is the Redis transport's order; RabbitMQ ignores priorities on queues declared without
# ``x-max-priority`` (as ours are), which gives back plain FIFO, never a wrong payment.
START_PRIORITY = 0
EXPAND_PRIORITY = 3
CONTINUE_PRIORITY = 6

EXPANDABLE = (PayoutJob.Status.QUEUED, PayoutJob.Status.EXPANDING)
# States in which an expansion that lost a slice is resumed (a cancelled job's late entries
# are cancelled by the watchdog, so its counters still add up).
RESUMABLE = (PayoutJob.Status.RUNNING, PayoutJob.Status.PAUSED, PayoutJob.Status.CANCELLED)


@cache
def _redis() -> redis.Redis:
    return redis_from_url(settings.REDIS_URL)


def expand_enqueue(*, job_id: int) -> None:
    """Send the expansion task of a job (call it after commit)."""
    send_task(EXPAND_TASK, args=[job_id], priority=EXPAND_PRIORITY)


def payout_batches_enqueue(
    *,
    job_id: int,
    rail: str,
    count: int,
    after_id: int = 0,
    limit: int = 0,
    priority: int = START_PRIORITY,
) -> None:
    """Send ``count`` batch tasks for a job at ``priority``, picking the batch task of its rail.

    ``after_id`` tells the ledger rail where its keyset claim starts and ``limit`` (when set)
    caps its first claim below the job's batch size; other rails' batch tasks take the job id
    only. Extra batches are harmless (they claim with SKIP LOCKED and post with unique keys),
    so this is safe to call twice.
    """
    kwargs: dict[str, int] = {}
    if rail == PayoutJob.Rail.LEDGER:
        kwargs = {k: v for k, v in (("after_id", after_id), ("limit", limit)) if v}
    for _ in range(count):
        send_task(BATCH_TASKS[rail], args=[job_id], kwargs=kwargs, priority=priority)


def _job_terms(job: PayoutJob) -> SettlementTerms:
    payout = job.kind == PayoutJob.Kind.PAYOUT
    with connection.cursor() as cursor:
        # The settlement sorts every winner by remainder: in memory, not in temp files.
        cursor.execute("SET LOCAL work_mem = '256MB'")
    return settlement_terms(
        challenge_id=job.challenge_id,
        winning_side=job.winning_side if payout else None,
        fee_bps=job.fee_bps,
    )


def entries_missing(job: PayoutJob) -> bool:
    return PayoutEntry.objects.filter(job=job).count() < job.total_entries


@dataclass(frozen=True, slots=True)
class Expansion:
    terms: SettlementTerms
    next_stake_id: int | None  # where the next slice starts (its task is sent), or None


def payout_job_expand(*, job_id: int, start_size: int | None = None) -> Expansion | None:
    """Settle a queued job, create its first slice of entries and start paying them.

    Under the job row lock: the settlement's terms (``settlement_terms``), the job's totals,
    ``running`` and the first slice of entries commit together; after commit the batches and
    the next slices' tasks are sent (a job with no stake at all gets a batch at once, which
    finalizes it). Idempotent: a rerun finds the job running and does nothing -- unless some
    of its entries are missing (a slice's task was lost), in which case it goes through the
    slices again, skipping what exists. None when there was nothing to do.
    ``start_size`` (the task passes ``PAYOUT_START_SIZE``): the first slice holds that many
    stakes, and on the ledger rail every slice is paid as it is created (``_ledger_expand``);
    without it the first slice is a full one and entries are created pending, for batches, as
    in-process callers such as the benchmarks' baselines expect.
    """
    PayoutJob.objects.filter(pk=job_id, status=PayoutJob.Status.QUEUED).update(
        status=PayoutJob.Status.EXPANDING, updated_at=Now()
    )
    with transaction.atomic(durable=True):
        job = PayoutJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise NotFound("No such payout job.", code="job_not_found")
        resumed = False
        if job.status in EXPANDABLE:
            terms = payout_job_settle(job)
        elif job.status in RESUMABLE and entries_missing(job):
            terms = _job_terms(job)
            resumed = True
        else:
            return None
        if terms.first_stake_id is None:
            transaction.on_commit(
                partial(payout_batches_enqueue, job_id=job.pk, rail=job.rail, count=1)
            )
            return Expansion(terms, None)
        values = {
            "status": job.status,
            "rail": job.rail,
            "kind": job.kind,
            "parallelism": job.parallelism,
            "batch_size": job.batch_size,
        }
        if start_size is not None and job.rail == PayoutJob.Rail.LEDGER:
            next_id = _ledger_expand(
                job_id=job.pk, terms=terms, job=values, start_size=start_size, chained=not resumed
            )
        else:
            next_id = _slice_expand(
                job_id=job.pk,
                terms=terms,
                from_stake_id=terms.first_stake_id,
                start_size=start_size,
                job=values,
            )
    return Expansion(terms, next_id)


def payout_job_settle(job: PayoutJob) -> SettlementTerms:
    """Settle a queued or expanding job whose row the caller holds locked: its settlement's
    terms, and its kind, totals and ``running`` saved. The expansion's first step; the proof
    (``proof.engine_limits``) settles a job with it and creates the entries itself."""
    terms = _job_terms(job)
    job.kind = PayoutJob.Kind.REFUND if terms.refund else job.kind
    job.total_entries = terms.entries
    job.total_amount = terms.total_amount
    job.fee_amount = terms.fee
    job.status = PayoutJob.Status.RUNNING
    job.started_at = job.updated_at = timezone.now()
    job.save(
        update_fields=[
            "kind",
            "total_entries",
            "total_amount",
            "fee_amount",
            "status",
            "started_at",
            "updated_at",
        ]
    )
    return terms


def payout_job_expand_chunk(
    *, job_id: int, terms: dict, from_stake_id: int, analyze: bool = False
) -> int | None:
    """Create the entries of the next slice of stakes (sent by the slice before it).

    One transaction per slice (idempotent: entries are unique per job and user); see
    ``_slice_expand``. Returns where the slice after it starts, or None.
    """
    with transaction.atomic(durable=True):
        job = (
            PayoutJob.objects.filter(pk=job_id)
            .values("status", "rail", "kind", "parallelism", "batch_size")
            .first()
        )
        if job is None:
            raise NotFound("No such payout job.", code="job_not_found")
        return _slice_expand(
            job_id=job_id,
            terms=SettlementTerms(**terms),
            from_stake_id=from_stake_id,
            job=job,
            analyze=analyze,
        )


def _slice_expand(
    *,
    job_id: int,
    terms: SettlementTerms,
    from_stake_id: int,
    job: Mapping[str, Any],
    analyze: bool = False,
    start_size: int | None = None,
) -> int | None:
    """Insert one slice of stakes' entries, pending; after commit, send the next slice's task
    and, if the job is running, batches starting at this slice's first entry, so payment
    starts after the first slice instead of after the last. Slices are created whatever the
    job's state, so that its counters always add up to ``total_entries``. (The Stripe rail's
    expansion, and any rail's in process; the ledger rail's task: ``_ledger_expand``.)

    Given ``start_size`` (the expansion task passes ``PAYOUT_START_SIZE``; in-process callers
    get a full first slice), the first slice holds that many stakes and sends one batch of at
    most as many entries at ``START_PRIORITY`` (a job starts paying after a few milliseconds
    of work, ahead of the jobs already paying) plus the rest of its ``parallelism`` at
    ``CONTINUE_PRIORITY`` (none on the ledger rail when the rest fits one batch); later slices
    hold ``PAYOUT_EXPAND_CHUNK`` stakes and send one batch, both at ``CONTINUE_PRIORITY``.
    ``analyze`` (the slice after the first) refreshes the planner's statistics for a large
    job, once its entries are more than a start, so the batches' claim is planned on them."""
    first = from_stake_id == terms.first_stake_id
    start = first and start_size is not None
    limit = start_size if start and start_size else settings.PAYOUT_EXPAND_CHUNK
    chunk = payout_entries_insert(
        job_id=job_id, terms=terms, from_stake_id=from_stake_id, limit=limit
    )
    # The first full-size slice (the first one, or the one after a small start) analyzes.
    if (analyze or (first and not start)) and terms.entries >= ANALYZE_ENTRIES_THRESHOLD:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE payouts_payoutentry")
    full = chunk.stakes == limit and chunk.last_stake_id is not None
    next_id = chunk.last_stake_id + 1 if full and chunk.last_stake_id is not None else None
    if next_id is not None:
        transaction.on_commit(
            partial(
                send_task,
                EXPAND_CHUNK_TASK,
                args=[job_id, asdict(terms), next_id],
                kwargs={"analyze": start},
                priority=CONTINUE_PRIORITY,
            )
        )
    if chunk.first_entry_id is not None and job["status"] == PayoutJob.Status.RUNNING:
        enqueue = partial(
            payout_batches_enqueue,
            job_id=job_id,
            rail=job["rail"],
            after_id=chunk.first_entry_id - 1,
        )
        if first:
            transaction.on_commit(partial(enqueue, count=1, limit=limit if start else 0))
        # A ledger job whose rest fits one batch gains nothing from parallel chains (its start
        # batch's follow-up takes it all); the Stripe rail's parallelism is its calls in flight.
        rest = terms.entries - chunk.inserted
        ledger_fits = job["rail"] == PayoutJob.Rail.LEDGER and rest <= job["batch_size"]
        more = (0 if ledger_fits else job["parallelism"] - 1) if first else 1
        if more > 0:
            transaction.on_commit(partial(enqueue, count=more, priority=CONTINUE_PRIORITY))
    return next_id


def _ledger_expand(
    *,
    job_id: int,
    terms: SettlementTerms,
    job: Mapping[str, Any],
    start_size: int,
    chained: bool,
) -> int | None:
    """The ledger rail's expansion task: every slice's entries are paid by the statement that
    creates them (``_ledger_slice``), so no entry is written twice and no batch claims it.

    The start (``start_size`` stakes) is paid here, in the expansion's transaction: a job of
    up to ``PAYOUT_START_SIZE`` winners is paid and finalized by its expansion alone. The rest
    is cut into slices of ``batch_size`` stakes (``slice_starts``, one pass over the stakes'
    ids) dealt round-robin to ``parallelism`` chains (``payout_job_slice``; chain ``c`` pays
    slices ``c``, ``c + parallelism``, ...), sent after commit at ``CONTINUE_PRIORITY``. A
    resumed expansion (``chained`` False: a slice's task was lost, the watchdog sent the
    expansion again) sends every slice once, unchained: a slice that exists creates nothing.
    Returns where the first of the other slices starts, or None.
    """
    chunk = _ledger_slice(
        job_id=job_id,
        terms=terms,
        from_stake_id=terms.first_stake_id or 0,
        limit=start_size,
        job=job,
        priority=START_PRIORITY,
    )
    if chunk.stakes < start_size or chunk.last_stake_id is None:
        return None
    size = job["batch_size"]
    starts = slice_starts(terms=terms, from_stake_id=chunk.last_stake_id + 1, size=size)
    chains = min(job["parallelism"], len(starts)) if chained else len(starts)
    for c in range(chains):
        transaction.on_commit(
            partial(
                send_task,
                SLICE_TASK,
                args=[job_id, asdict(terms), starts[c::chains], size],
                priority=CONTINUE_PRIORITY,
            )
        )
    return starts[0] if starts else None


def payout_job_slice(
    *, job_id: int, terms: dict, starts: list[int], size: int, redelivered: bool = False
) -> int:
    """Create and pay the ledger-rail entries of the slice of ``size`` stakes from
    ``starts[0]`` (``_ledger_slice``), one transaction; after commit, send the chain's next
    slice (``starts[1:]``) -- when this one created entries, so that a duplicated message's
    chain ends at its first slice, or when its message was ``redelivered`` (its worker died,
    maybe between the commit and the sending: the next slice then creates nothing or what
    is missing, and its own chain goes on only if it created something). Returns the
    entries created.

    Idempotent: entries are unique per job and user, and only the entries a run creates are
    paid, so a rerun creates and pays nothing. A chain whose message is lost for good (the
    broker lost it) leaves entries missing: the watchdog sends the expansion again, which
    resumes every slice unchained.
    """
    with transaction.atomic(durable=True):
        job = PayoutJob.objects.filter(pk=job_id).values("status", "rail", "kind").first()
        if job is None:
            raise NotFound("No such payout job.", code="job_not_found")
        chunk = _ledger_slice(
            job_id=job_id,
            terms=SettlementTerms(**terms),
            from_stake_id=starts[0],
            limit=size,
            job=job,
            priority=CONTINUE_PRIORITY,
        )
        if (chunk.inserted or redelivered) and len(starts) > 1:
            transaction.on_commit(
                partial(
                    send_task,
                    SLICE_TASK,
                    args=[job_id, terms, starts[1:], size],
                    priority=CONTINUE_PRIORITY,
                )
            )
    return chunk.inserted


def _ledger_slice(
    *,
    job_id: int,
    terms: SettlementTerms,
    from_stake_id: int,
    limit: int,
    job: Mapping[str, Any],
    priority: int,
) -> Chunk:
    """Create the entries of ``limit`` stakes from ``from_stake_id`` on a ledger-rail job,
    inside the caller's transaction: paid as they are created when the job is running
    (``_slice_pay``; the job is finalized after commit when they were its last open
    entries), else pending -- a paused or cancelled job's, paid on resume or cancelled, as
    any pending entry; and one batch at ``priority`` when the job runs but its entries could
    not be paid as created."""
    running = job["status"] == PayoutJob.Status.RUNNING
    paid = (
        _slice_pay(
            job_id=job_id, terms=terms, from_stake_id=from_stake_id, limit=limit, kind=job["kind"]
        )
        if running
        else None
    )
    if paid is not None:
        if paid.still_open is not None:
            transaction.on_commit(partial(payout_progress_publish, job_id=job_id))
            if paid.still_open == 0:
                # Paid in full by this slice: closed here, as a batch closes the job it
                # finishes (robust: should it fail, the watchdog finalizes a job that stopped
                # moving).
                transaction.on_commit(partial(payout_job_finalize, job_id=job_id), robust=True)
        return paid.chunk
    chunk = payout_entries_insert(
        job_id=job_id, terms=terms, from_stake_id=from_stake_id, limit=limit
    )
    if running and chunk.first_entry_id is not None:
        transaction.on_commit(
            partial(
                payout_batches_enqueue,
                job_id=job_id,
                rail=PayoutJob.Rail.LEDGER,
                count=1,
                after_id=chunk.first_entry_id - 1,
                limit=limit,
                priority=priority,
            )
        )
    return chunk


@dataclass(frozen=True, slots=True)
class SlicePaid:
    chunk: Chunk
    still_open: int | None  # the job's open entries after it; None when it created nothing


class _SliceNotPaid(Exception):
    """A slice could not be paid as it was created: undo it (see ``_slice_pay``)."""


def _slice_pay(
    *, job_id: int, terms: SettlementTerms, from_stake_id: int, limit: int, kind: str
) -> SlicePaid | None:
    """Create a slice's entries already paid (``_SLICE_PAY_SQL``), count them on the job and
    take them out of the escrow; inside the caller's transaction, in a savepoint.

    None, with nothing written, when a created entry found no wallet to pay (none does:
    every staker's stake came out of a wallet) or the job is no longer running (paused or
    cancelled since the caller read it): the caller then creates the slice ``pending``. A
    slice whose entries exist already (a rerun) creates and pays nothing.
    """
    sql, params = ledger_slice_statement(
        job_id=job_id,
        terms=terms,
        from_stake_id=from_stake_id,
        limit=limit,
        kind=kind,
        escrow_id=Challenge.objects.values_list("escrow_id", flat=True).get(pk=terms.challenge_id),
    )
    try:
        with transaction.atomic():
            return _slice_paid(sql=sql, params=params, job_id=job_id)
    except _SliceNotPaid:
        logger.warning("payout job %s: a slice is created pending, for a batch", job_id)
        return None


def ledger_slice_statement(
    *,
    job_id: int,
    terms: SettlementTerms,
    from_stake_id: int,
    limit: int,
    kind: str,
    escrow_id: int,
) -> tuple[str, dict[str, Any]]:
    """The statement that creates and pays a ledger slice (``_SLICE_PAY_SQL``) and its
    parameters: what ``_slice_pay`` runs, and what the proof runs bare as the database's
    limit (``proof.engine_limits``)."""
    sql = _SLICE_PAY_SQL.format(
        slice=slice_entries_ctes(terms),
        posting=_POSTING_CTES.format(source="ins"),
        figures=SLICE_FIGURES,
    )
    params = {
        **slice_params(
            job_id=job_id, terms=terms, from_stake_id=from_stake_id, limit=limit, paid=True
        ),
        "currency": settings.CURRENCY,
        "escrow_id": escrow_id,
        # The job kinds are also transfer kinds: "payout" or "refund".
        "kind": kind,
    }
    return sql, params


def _slice_paid(*, sql: str, params: dict[str, Any], job_id: int) -> SlicePaid:
    """``_slice_pay``'s statement and booking; raises ``_SliceNotPaid`` to have them undone."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        stakes, last_stake_id, inserted, first_entry_id, paid, amount = cursor.fetchone()
    still_open = None
    if inserted:
        if paid != inserted:
            raise _SliceNotPaid
        still_open = _paid_book(
            job_id=job_id,
            entries=paid,
            amount=amount,
            escrow_id=params["escrow_id"],
            rail=PayoutJob.Rail.LEDGER,
        )
        if still_open is None:
            raise _SliceNotPaid
    return SlicePaid(Chunk(stakes, last_stake_id, inserted, first_entry_id), still_open)


_COUNTERS_BUMP_SQL = """
UPDATE payouts_payoutjob
SET completed_count = completed_count + %(completed)s,
    failed_count = failed_count + %(failed)s,
    paid_amount = paid_amount + %(paid_amount)s,
    updated_at = now()
WHERE id = %(job_id)s AND (NOT %(require_running)s OR status = %(running)s)
RETURNING total_entries - completed_count - failed_count - cancelled_count
"""


def payout_job_counters_bump(
    *,
    job_id: int,
    completed: int = 0,
    failed: int = 0,
    paid_amount: int = 0,
    require_running: bool = False,
) -> int | None:
    """Add to a job's counters; call it inside the transaction that made the entries terminal.
    Returns how many of the job's entries are still open (not completed, failed or cancelled)
    after the bump, or None when nothing changed.

    With ``require_running`` nothing changes and None comes back unless the job is
    ``running`` (re-checked on the latest row version, so a pause committed a moment ago
    counts): the ledger batch then rolls back. Rails whose money already left (a Stripe
    transfer) record regardless of the job state.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNTERS_BUMP_SQL,
            {
                "job_id": job_id,
                "completed": completed,
                "failed": failed,
                "paid_amount": paid_amount,
                "require_running": require_running,
                "running": PayoutJob.Status.RUNNING,
            },
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    claimed: int
    paid_amount: int
    last_id: int


# Each of ``{source}``'s rows (an entry's id and amount, and its user) paid: the transfer
# ``payout:<entry_id>`` escrow -> the user's wallet and the wallet's credit. Entries skipped
# by ON CONFLICT had been paid already: no money moves again.
_POSTING_CTES = """targets AS (
    SELECT c.id, c.amount, w.id AS wallet_id
    FROM {source} AS c
    JOIN payouts_account AS w
      ON w.user_id = c.user_id AND w.kind = 'user_wallet' AND w.currency = %(currency)s
), posted AS (
    INSERT INTO payouts_transfer
        (debit_account_id, credit_account_id, amount, kind, idempotency_key)
    SELECT %(escrow_id)s, wallet_id, amount, %(kind)s, 'payout:' || id FROM targets
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING credit_account_id, amount
), credited AS (
    UPDATE payouts_account AS a SET balance = a.balance + p.amount
    FROM posted AS p
    WHERE a.id = p.credit_account_id
    RETURNING p.amount
)"""

# Claim, post, credit and mark in one statement (no hot row touched here, so parallel batches
# of one job do not wait on each other); a claimed entry is marked completed with its
# transfer, or as already paid.
_LEDGER_BATCH_TEMPLATE = """
WITH claimed AS (
    SELECT id, user_id, amount FROM payouts_payoutentry
    WHERE job_id = %(job_id)s AND status = 'pending' AND id > %(after_id)s
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), {posting}, marked AS (
    -- = ANY(array) keeps this an index lookup per entry; a join on the CTE lets the planner
    -- pick a hash join over a scan of the whole entries table.
    UPDATE payouts_payoutentry AS e SET status = 'completed', completed_at = now()
    WHERE e.id = ANY(ARRAY(SELECT id FROM targets))
    RETURNING e.id
)
SELECT (SELECT count(*) FROM marked),
       (SELECT coalesce(sum(amount), 0) FROM credited),
       (SELECT coalesce(max(id), 0) FROM claimed)
"""
_LEDGER_BATCH_SQL = _LEDGER_BATCH_TEMPLATE.format(posting=_POSTING_CTES.format(source="claimed"))

# A ledger-rail slice: its stakes become entries created ``completed`` and paid by the same
# statement, so a payout needs no claim, no second write of its entry and no batch task. The
# slice's CTEs are the settlement's; then what was created, and what was paid (entries
# created with no wallet to pay: none, since every staker's stake came out of a wallet; the
# caller checks it).
_SLICE_PAY_SQL = """
WITH {slice}, {posting}
SELECT {figures}, (SELECT count(*) FROM credited), (SELECT coalesce(sum(amount), 0) FROM credited)
"""

_ESCROW_DEBIT_SQL = "UPDATE payouts_account SET balance = balance - %s WHERE id = %s"


def escrow_debit(*, escrow_id: int, amount: int) -> None:
    """Take ``amount`` paid out of a job's escrow, in the transaction that paid it."""
    with connection.cursor() as cursor:
        cursor.execute(_ESCROW_DEBIT_SQL, [amount, escrow_id])


def _paid_book(*, job_id: int, entries: int, amount: int, escrow_id: int, rail: str) -> int | None:
    """Count ``entries`` paid ``amount`` on a running job and take ``amount`` out of its
    escrow, in the transaction that paid them; the paid-payouts metric follows the commit.
    Returns the job's open entries after them, or None, with nothing booked, when the job is
    not running (paused or cancelled meanwhile): the caller must then undo the payments.
    """
    # Nothing is left to check at commit (the payments' rows carry no foreign key constraint,
    # ledger/0004 and payouts/0012), so the hot rows locked from here on (the job's counters,
    # the escrow) are held only until the commit's WAL flush.
    still_open = payout_job_counters_bump(
        job_id=job_id, completed=entries, paid_amount=amount, require_running=True
    )
    if still_open is None:
        return None
    escrow_debit(escrow_id=escrow_id, amount=amount)
    transaction.on_commit(partial(payouts_paid_count, rail=rail, entries=entries, amount=amount))
    return still_open


def payout_batch_ledger(*, job_id: int, after_id: int = 0, limit: int = 0) -> BatchOutcome:
    """Pay up to ``batch_size`` (or ``limit``, when smaller) pending entries of a running
    ledger-rail job, then keep going with full batches at ``CONTINUE_PRIORITY``.

    One transaction: claim (SKIP LOCKED, entries after ``after_id``), transfers
    ``payout:<entry_id>`` escrow -> wallet, wallet credits, entries ``completed``, job counters,
    escrow debit. Idempotent (a duplicate message claims other entries or none; the unique
    transfer key pays nobody twice) and crash-safe (nothing commits halfway). After commit it
    sends the next batch of its chain while the job has open entries, and tries to finalize
    when it paid the last of them or found none; it publishes progress at most once a second
    per job. Does nothing unless the job is
    ``running``; a pause or cancel committed during the batch rolls it back.
    """
    job = (
        PayoutJob.objects.filter(pk=job_id)
        .values("status", "kind", "batch_size", "rail", "challenge__escrow_id")
        .first()
    )
    if job is None or job["status"] != PayoutJob.Status.RUNNING:
        return BatchOutcome(0, 0, after_id)
    params = {
        "job_id": job_id,
        "after_id": after_id,
        "limit": min(limit, job["batch_size"]) if limit else job["batch_size"],
        "currency": settings.CURRENCY,
        "escrow_id": job["challenge__escrow_id"],
        # The job kinds are also transfer kinds: "payout" or "refund".
        "kind": job["kind"],
    }
    still_open: int | None = None
    with transaction.atomic(durable=True):
        with connection.cursor() as cursor:
            cursor.execute(_LEDGER_BATCH_SQL, params)
            claimed, paid, last_id = cursor.fetchone()
        if claimed:
            still_open = _paid_book(
                job_id=job_id,
                entries=claimed,
                amount=paid,
                escrow_id=params["escrow_id"],
                rail=job["rail"],
            )
            if still_open is None:
                # Paused or cancelled meanwhile: this batch must not pay anyone.
                transaction.set_rollback(True)
                return BatchOutcome(0, 0, after_id)
            # The batch that pays the job's last open entries finalizes it itself: a
            # follow-up would only find nothing and finalize, one task later (a small job's
            # fixed cost on a busy evening).
            if still_open:
                transaction.on_commit(
                    partial(
                        send_task,
                        BATCH_TASKS[job["rail"]],
                        args=[job_id],
                        kwargs={"after_id": last_id},
                        priority=CONTINUE_PRIORITY,
                    )
                )
    if not claimed or still_open == 0:
        payout_job_finalize(job_id=job_id)
    payout_progress_publish(job_id=job_id)
    return BatchOutcome(int(claimed), int(paid), int(last_id) or after_id)


# Every staker's outcome, in one statement per job whatever the number of stakers: paid
# (or refunded) and failed entries, and the losing side's stakes. The dedup keys make a repeat
# (finalize after a retry, the watchdog) insert only what is new: ``payout:<entry_id>`` for
# the money that arrived, ``payout_account_needed:<entry_id>``, ``payout_failed:<entry_id>``
# and ``challenge_lost:<stake_id>``.
_NOTIFY_SELECT = """
WITH outcomes AS (
    SELECT e.user_id, e.id AS subject_id, e.id AS entry_id, e.amount, e.failure_reason AS reason,
           CASE WHEN e.status = 'completed' THEN %(paid_kind)s
                WHEN e.failure_reason = %(not_connected)s THEN %(needed_kind)s
                ELSE %(failed_kind)s END AS kind
    FROM payouts_payoutentry AS e
    WHERE e.job_id = %(job_id)s AND e.status IN ('completed', 'failed')
    UNION ALL
    SELECT s.user_id, s.id, NULL, s.amount, '', %(lost_kind)s
    FROM challenges_stake AS s
    WHERE s.challenge_id = %(challenge_id)s AND %(has_losers)s AND s.side <> %(winning_side)s
)
SELECT o.user_id, o.kind, %(challenge_id)s::bigint, m.title,
       format(m.body, o.amount, %(currency)s, %(challenge_title)s,
              coalesce(r.text, %(default_reason)s)),
       CASE WHEN o.kind IN (%(needed_kind)s, %(failed_kind)s) THEN 'high' ELSE 'normal' END,
       jsonb_build_object('payout_job_id', %(job_id)s::bigint, 'entry_id', o.entry_id,
                          'amount', o.amount)
         || CASE WHEN o.kind = %(needed_kind)s
                 THEN jsonb_build_object('action', %(needed_action)s) ELSE '{}'::jsonb END,
       CASE WHEN o.kind = %(paid_kind)s THEN 'payout' ELSE o.kind END || ':' || o.subject_id
FROM outcomes AS o
JOIN unnest(%(kinds)s::text[], %(titles)s::text[], %(bodies)s::text[]) AS m(kind, title, body)
  ON m.kind = o.kind
LEFT JOIN unnest(%(reasons)s::text[], %(reason_texts)s::text[]) AS r(reason, text)
  ON r.reason = o.reason
"""

# What each outcome says. Bodies are PostgreSQL ``format`` strings over (amount, currency,
# challenge title, reason): people read them, so no internal codes or error text.
OUTCOME_MESSAGES: dict[str, tuple[str, str]] = {
    "payout_completed": ("You won a challenge", '%1$s %2$s paid to %5$s for "%3$s".'),
    "stake_refunded": (
        "Your stake was refunded",
        'Your %1$s %2$s stake on "%3$s" is back in your wallet.',
    ),
    "challenge_lost": (
        "You lost a challenge",
        'Your %1$s %2$s stake on "%3$s" went to the winners.',
    ),
    "payout_account_needed": (
        "Connect a payout account to receive your winnings",
        '%1$s %2$s from "%3$s" is waiting for you. Connect a Stripe account in the app '
        "(POST /api/payout-account/) and it is sent to you as soon as Stripe enables it.",
    ),
    "payout_failed": (
        "We could not send your winnings",
        'We could not send your %1$s %2$s from "%3$s": %4$s The money is safe with us and our '
        "team has been told.",
    ),
}
PAYOUT_ACCOUNT_ACTION = "POST /api/payout-account/"
# Failure reasons (PayoutEntry.failure_reason) in words; anything else reads as the default.
FAILURE_EXPLANATIONS: dict[str, str] = {
    "stripe_attempts_exhausted": "our payment provider did not answer, even after many tries.",
}
DEFAULT_FAILURE_EXPLANATION = "your Stripe account could not receive the transfer."


def payout_job_notify(*, job_id: int) -> int:
    """Tell every staker of a job its outcome, once each; one statement.

    Winners ``payout_completed`` (or ``stake_refunded`` on a refund job) with the amount;
    losers ``challenge_lost`` with their stake; a winner whose entry failed for want of a
    connected account ``payout_account_needed`` with the amount waiting and the call that
    fixes it; any other failure ``payout_failed`` with a reason in words. Sent by
    ``payout_job_finalize`` after commit (so after the money moved), and by the watchdog for
    a finished job without its notifications. Idempotent: what exists is skipped (a job
    finalized again after a retry adds only the new outcomes). Returns how many were created.
    """
    from notifications.models import Notification
    from notifications.services import notifications_insert_select

    job = PayoutJob.objects.select_related("challenge").filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such payout job.", code="job_not_found")
    refund = job.kind == PayoutJob.Kind.REFUND
    paid_kind = Notification.Kind.STAKE_REFUNDED if refund else Notification.Kind.PAYOUT_COMPLETED
    kinds = list(OUTCOME_MESSAGES)
    params = {
        "job_id": job.pk,
        "challenge_id": job.challenge_id,
        "challenge_title": job.challenge.title,
        "currency": settings.CURRENCY,
        "paid_kind": paid_kind,
        "needed_kind": Notification.Kind.PAYOUT_ACCOUNT_NEEDED,
        "failed_kind": Notification.Kind.PAYOUT_FAILED,
        "lost_kind": Notification.Kind.CHALLENGE_LOST,
        "not_connected": ACCOUNT_NOT_CONNECTED,
        "needed_action": PAYOUT_ACCOUNT_ACTION,
        "has_losers": not refund,
        "winning_side": job.winning_side,
        "kinds": kinds,
        "titles": [OUTCOME_MESSAGES[kind][0] for kind in kinds],
        "bodies": [
            OUTCOME_MESSAGES[kind][1].replace(
                "%5$s",
                "your Stripe account" if job.rail == PayoutJob.Rail.STRIPE else "your wallet",
            )
            for kind in kinds
        ],
        "reasons": list(FAILURE_EXPLANATIONS),
        "reason_texts": list(FAILURE_EXPLANATIONS.values()),
        "default_reason": DEFAULT_FAILURE_EXPLANATION,
    }
    with transaction.atomic(durable=True):
        ids = notifications_insert_select(select_sql=_NOTIFY_SELECT, params=params)
    return len(ids)


class LedgerMismatch(Exception):
    """The escrow does not hold what the job's counters say it must: finalizing stops."""


def payout_job_finalize(*, job_id: int) -> bool:
    """Close a running job whose every entry is terminal; False when it is not (yet) closable.

    Idempotent (the job row lock and the status check let one caller through; the fee
    transfer has the unique key ``fee:<job_id>``) and rail-independent. Posts the fee the
    settlement computed, checks that the escrow then holds exactly the unpaid (failed) amount
    -- 0 when everything was paid -- and raises ``LedgerMismatch`` otherwise, sets the job to
    ``completed`` or ``completed_with_failures`` and completes the challenge; after commit it
    sends every staker's outcome notification (``payout_job_notify``), which takes a while
    for a million stakers and so runs as its own task, not inside the money transaction.

    A ``LedgerMismatch`` is permanent (retrying cannot change what the escrow holds): the
    money transaction rolls back, the job moves to ``failed`` with the error (see
    ``payout_job_fail``), and False comes back. Staff fix the cause and retry the job.
    """
    try:
        return _job_finalize(job_id=job_id)
    except LedgerMismatch as exc:
        logger.error("payout job %s cannot finalize: %s", job_id, exc)  # noqa: TRY400
        payout_job_fail(job_id=job_id, error=str(exc))
        return False


def payout_job_fail(*, job_id: int, error: str) -> bool:
    """Move a running job to ``failed`` with ``error`` (a finalize that cannot succeed by
    retrying). Only from ``running``, so a job that a concurrent caller finalized stays
    finalized; the watchdog restarts only running jobs, so it leaves a failed one alone.
    Returns whether the job moved."""
    with transaction.atomic(durable=True):
        moved = PayoutJob.objects.filter(pk=job_id, status=PayoutJob.Status.RUNNING).update(
            status=PayoutJob.Status.FAILED,
            error=error[:10_000],
            finished_at=Now(),
            updated_at=Now(),
        )
        if moved:
            transaction.on_commit(partial(payout_progress_publish, job_id=job_id, force=True))
            transaction.on_commit(partial(JOBS_FINISHED.inc, status=PayoutJob.Status.FAILED))
    return bool(moved)


def _job_finalize(*, job_id: int) -> bool:
    job = PayoutJob.objects.filter(pk=job_id).first()
    # Unlocked look first: batches that found nothing call this while others still work.
    if job is None or job.status != PayoutJob.Status.RUNNING or _open_entries(job):
        return False
    with transaction.atomic(durable=True):
        job = (
            PayoutJob.objects.select_for_update(of=("self",))
            .select_related("challenge")
            .get(pk=job_id)
        )
        if job.status != PayoutJob.Status.RUNNING or _open_entries(job):
            return False
        escrow_id = job.challenge.escrow_id
        if job.fee_amount:
            try:
                transfer_post(
                    debit_account_id=escrow_id,
                    credit_account_id=system_account_id(Account.Kind.PLATFORM_FEES),
                    amount=job.fee_amount,
                    kind=Transfer.Kind.FEE,
                    idempotency_key=f"fee:{job.pk}",
                )
            except InsufficientFunds as exc:
                # An escrow short of even the fee is the mismatch below, found sooner: the job
                # must fail the same way, not retry a transfer that can never pass.
                raise LedgerMismatch(
                    f"job {job.pk}: escrow {escrow_id} holds less than the fee {job.fee_amount}"
                ) from exc
        escrow = Account.objects.get(pk=escrow_id)
        unpaid = job.total_amount - job.paid_amount
        if escrow.balance != unpaid:
            raise LedgerMismatch(
                f"job {job.pk}: escrow {escrow_id} holds {escrow.balance}, expected {unpaid}"
            )
        now = timezone.now()
        job.status = (
            PayoutJob.Status.COMPLETED_WITH_FAILURES
            if job.failed_count
            else PayoutJob.Status.COMPLETED
        )
        job.finished_at = now
        job.updated_at = now
        job.save(update_fields=["status", "finished_at", "updated_at"])
        challenge = job.challenge
        if challenge.status == challenge.Status.RESOLVING:
            challenge.status = challenge.Status.COMPLETED
            challenge.completed_at = now
            challenge.updated_at = now
            challenge.save(update_fields=["status", "completed_at", "updated_at"])
        transaction.on_commit(partial(send_task, NOTIFY_TASK, args=[job.pk]))
        transaction.on_commit(partial(payout_progress_publish, job_id=job.pk, force=True))
        transaction.on_commit(partial(JOBS_FINISHED.inc, status=job.status))
    return True


def _open_entries(job: PayoutJob) -> int:
    return job.total_entries - job.completed_count - job.failed_count - job.cancelled_count


def payout_progress_publish(*, job_id: int, force: bool = False) -> bool:
    """Push the job's progress to the staff channel, at most once a second per job.

    The Redis key ``SET NX PX`` lets one publisher per second through, across all workers.
    Best effort: a failing push is logged and never fails the money work that called it.
    """
    from notifications.services import staff_event_publish
    from payouts.selectors import payout_job_progress

    try:
        if not force and not _redis().set(
            f"payout_job:{job_id}:progress", 1, nx=True, px=PROGRESS_INTERVAL_MS
        ):
            return False
        job = PayoutJob.objects.filter(pk=job_id).first()
        if job is None:
            return False
        progress = payout_job_progress(job=job)
        # Timestamps stay out: the event must be plain JSON.
        data = {k: v for k, v in progress.items() if not k.endswith("_at")}
        staff_event_publish(event="payout_job.progress", data=data)
    # Progress is cosmetic: whatever goes wrong here must not fail the payouts that called it.
    except Exception:
        logger.warning("progress push for payout job %s failed", job_id, exc_info=True)
        return False
    return True


# A Stripe-rail entry that is retryable may already have its transfer (a lost answer): only
# ``stripe_entries_reconcile`` may cancel it, after asking Stripe.
_CANCEL_ENTRIES_SQL = """
WITH cancelled AS (
    UPDATE payouts_payoutentry SET status = 'cancelled', lease_until = NULL
    WHERE job_id = %(job_id)s
      AND (status = 'pending' OR (status = 'retryable' AND %(rail)s <> 'stripe'))
    RETURNING 1
)
UPDATE payouts_payoutjob
SET cancelled_count = cancelled_count + (SELECT count(*) FROM cancelled), updated_at = now()
WHERE id = %(job_id)s
RETURNING (SELECT count(*) FROM cancelled),
          total_entries - completed_count - failed_count - cancelled_count
              - (SELECT count(*) FROM cancelled)
"""


def payout_job_cancel_entries(*, job_id: int) -> int:
    """Cancel the entries of a cancelled job that never reached a rail; return how many.

    Pending entries (and, on the ledger rail, retryable ones) become ``cancelled``; their money
    stays in the escrow. On the Stripe rail, entries that may have reached Stripe stay open
    (the job shows them as uncertain) and, after commit, ``stripe_entries_reconcile`` is sent
    to ask Stripe about them: a paid one is recorded as paid, not cancelled. Set-based and
    idempotent (a second run cancels nothing new and asks again). Waits for batches that hold
    some of these entries: those roll back (the job is no longer running) and release them.
    """
    rail = PayoutJob.objects.filter(pk=job_id).values_list("rail", flat=True).first()
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_CANCEL_ENTRIES_SQL, {"job_id": job_id, "rail": rail or ""})
        row = cursor.fetchone()
        if row and row[1] > 0 and rail == PayoutJob.Rail.STRIPE:
            transaction.on_commit(partial(send_task, RECONCILE_TASK, args=[job_id]))
    return int(row[0]) if row else 0
