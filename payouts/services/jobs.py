"""Starting payout jobs (resolve, cancel, automatic refunds) and the staff controls over them.

Every staff action here runs in one durable transaction (the resolve: one statement that
commits itself) and is recorded in the audit trail in that transaction; work for the workers
is sent only after commit. The job engine itself lives
in ``payouts.services.engine``.
"""

from contextlib import nullcontext
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from challenges.models import Challenge, Stake
from core.db import columns_sql, prepared_cursor, row_model
from core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from core.services import audit_record
from payouts.metrics import JOBS_FINISHED
from payouts.models import PayoutEntry, PayoutJob, entries_in
from payouts.services.engine import (
    expand_enqueue,
    payout_batches_enqueue,
    payout_job_cancel_entries,
)
from payouts.services.stripe_client import ACCOUNT_NOT_CONNECTED

WINNING_SIDE: dict[str, str] = {
    Challenge.Result.CHALLENGER_WON: Stake.Side.YES,
    Challenge.Result.CHALLENGED_WON: Stake.Side.NO,
}
CANCELLABLE = (Challenge.Status.PENDING, Challenge.Status.ACTIVE, Challenge.Status.PENDING_ADMIN)
# Jobs that retry-failed may restart: finished ones run again.
FINISHED_RETRYABLE = (PayoutJob.Status.COMPLETED_WITH_FAILURES, PayoutJob.Status.FAILED)
RETRYABLE = (PayoutJob.Status.RUNNING, PayoutJob.Status.PAUSED, *FINISHED_RETRYABLE)
# Refunds return stakes to the wallets they came from, whatever rail pays the winnings.
REFUND_RAIL = PayoutJob.Rail.LEDGER


def _rail_check(rail: str | None) -> str:
    rail = rail or settings.PAYOUT_DEFAULT_RAIL
    if rail not in PayoutJob.Rail.values:
        raise InvalidInput(f"Unknown rail {rail!r}.", code="invalid_rail")
    if rail == PayoutJob.Rail.STRIPE and not settings.STRIPE_API_KEY:
        raise InvalidInput("Stripe payouts are not configured.", code="stripe_not_configured")
    return rail


# The challenge row, locked, and whether the actor staked on it: the stake check rides on the
# locking statement (resolve stays a constant number of queries). Written by hand: the ORM's
# compilation of it cost more CPU than the rest of the resolve's statements together.
_CHALLENGE_TARGET_SQL = f"""
SELECT {columns_sql(Challenge, "c")}, EXISTS (
    SELECT 1 FROM challenges_stake AS s WHERE s.challenge_id = c.id AND s.user_id = %(actor_id)s
) AS actor_staked
FROM challenges_challenge AS c
WHERE c.id = %(challenge_id)s
FOR UPDATE OF c
"""  # noqa: S608 - names from the models, values as parameters


def _challenge_refusal(
    challenge: Challenge, *, actor_staked: bool, actor_id: int | None
) -> DomainError | None:
    """Why ``actor`` may not decide ``challenge`` at all, or None.

    Whoever created the challenge, was challenged in it or staked on it may not decide it:
    ``403 conflict_of_interest``, superusers included, whatever the caller (API, admin, console).
    A challenge resolved already is ``409 already_resolved``.
    """
    if actor_id is not None and (
        actor_id in (challenge.challenger_id, challenge.challenged_id) or actor_staked
    ):
        return Forbidden(
            "You created this challenge, were challenged in it or staked on it: someone else "
            "must decide it.",
            code="conflict_of_interest",
        )
    if challenge.status in (Challenge.Status.RESOLVING, Challenge.Status.COMPLETED):
        return Conflict("This challenge was resolved already.", code="already_resolved")
    return None


def _challenge_locked(challenge_id: int, *, actor: Any) -> Challenge:
    """Lock the challenge row and refuse an actor who may not decide it
    (``_challenge_refusal``). Under the row lock no stake can land between this check and the
    decision."""
    actor_id: int | None = getattr(actor, "pk", None)
    with connection.cursor() as cursor:
        cursor.execute(_CHALLENGE_TARGET_SQL, {"challenge_id": challenge_id, "actor_id": actor_id})
        row = cursor.fetchone()
    if row is None:
        raise NotFound("No such challenge.", code="challenge_not_found")
    challenge = row_model(Challenge, row)
    refusal = _challenge_refusal(challenge, actor_staked=row[-1], actor_id=actor_id)
    if refusal is not None:
        raise refusal
    return challenge


def rail_parallelism(rail: str) -> int:
    """Batches in flight per job of ``rail``, copied onto the job when it is created.

    A ledger batch keeps a CPU and a database connection busy, so ``PAYOUT_PARALLELISM`` is
    small; a Stripe batch mostly waits on Stripe (one call at a time), so a Stripe job takes
    ``STRIPE_PARALLELISM`` batches, one per thread of the Stripe worker's pool.
    """
    if rail == PayoutJob.Rail.STRIPE:
        return settings.STRIPE_PARALLELISM
    return settings.PAYOUT_PARALLELISM


# The job row as every start inserts it, with its counters at zero; ``error``, ``created_at``
# and ``updated_at`` take their database defaults.
_JOB_INSERT = """
INSERT INTO payouts_payoutjob AS j
    (challenge_id, kind, rail, status, winning_side, fee_bps, batch_size, parallelism,
     created_by_id, total_entries, completed_count, failed_count, cancelled_count,
     total_amount, paid_amount, fee_amount)
"""
_JOB_COUNTERS_ZERO = "0, 0, 0, 0, 0, 0, 0"


def _already_started() -> Conflict:
    # UNIQUE(challenge): the row lock makes this unreachable through these services, but the
    # database has the last word.
    return Conflict("This challenge has a payout job already.", code="already_resolved")


def _job_create(*, challenge: Challenge, kind: str, rail: str, winning_side: str, actor: Any):
    try:
        job = PayoutJob.objects.create(
            challenge=challenge,
            kind=kind,
            rail=rail,
            winning_side=winning_side,
            fee_bps=settings.PLATFORM_FEE_BPS,
            batch_size=settings.PAYOUT_BATCH_SIZE,
            parallelism=rail_parallelism(rail),
            created_by=actor if getattr(actor, "pk", None) else None,
        )
    except IntegrityError as exc:
        raise _already_started() from exc
    transaction.on_commit(partial(expand_enqueue, job_id=job.pk))
    return job


NOTE_MAX_LENGTH = 5_000


def _note_check(note: str) -> str:
    note = (note or "").strip()
    if len(note) > NOTE_MAX_LENGTH:
        raise InvalidInput(
            f"The note may hold at most {NOTE_MAX_LENGTH} characters.", code="note_too_long"
        )
    return note


# A resolve in one statement: lock the challenge (``_CHALLENGE_TARGET_SQL``), record the result
# if the actor may decide it and it awaits resolution (the rules of ``_challenge_refusal``, which
# explains a refusal afterwards), create its job and audit it. While a big job pays, each round
# trip to the database waits for a core: one statement instead of four took the bench's p99
# at a million stakers, with a million winners paying, from about 22.5 to 19 ms. The job is a
# payout when the winning side has stakes, else a refund on the ledger.
_RESOLVE_SQL = f"""
WITH target AS ({_CHALLENGE_TARGET_SQL}),
decided AS (
    UPDATE challenges_challenge AS c
    SET status = 'resolving', result = %(result)s, resolved_at = %(now)s,
        resolved_by_id = %(actor_id)s, resolution_note = %(note)s, updated_at = %(now)s
    FROM target AS t
    WHERE c.id = t.id AND t.status = 'pending_admin'
      AND (%(actor_id)s::integer IS NULL
           OR (NOT t.actor_staked AND %(actor_id)s IS DISTINCT FROM t.challenger_id
               AND %(actor_id)s IS DISTINCT FROM t.challenged_id))
    RETURNING c.id, CASE %(side)s WHEN 'yes' THEN c.yes_total > 0
                                  WHEN 'no' THEN c.no_total > 0 ELSE false END AS payout
),
job AS (
    {_JOB_INSERT}
    SELECT id,
           CASE WHEN payout THEN 'payout' ELSE 'refund' END,
           CASE WHEN payout THEN %(rail)s ELSE %(refund_rail)s END,
           'queued',
           CASE WHEN payout THEN %(side)s ELSE '' END,
           %(fee_bps)s, %(batch_size)s,
           CASE WHEN payout THEN %(parallelism)s ELSE %(refund_parallelism)s END,
           %(actor_id)s, {_JOB_COUNTERS_ZERO}
    FROM decided
    RETURNING {columns_sql(PayoutJob, "j")}
),
audit AS (
    INSERT INTO core_auditentry (actor_id, action, target_type, target_id, details)
    SELECT %(actor_id)s, 'challenge.resolve', 'challenge', challenge_id::text,
           jsonb_build_object('result', %(result)s::text, 'payout_job_id', id, 'kind', kind,
                              'rail', rail, 'note', %(note)s::text)
    FROM job
)
SELECT {columns_sql(Challenge, "target")}, target.actor_staked, {columns_sql(PayoutJob, "job")}
FROM target LEFT JOIN job ON true
"""  # noqa: S608 - names from the models, values as parameters


def challenge_resolve(
    *, challenge_id: int, result: str, actor: Any, rail: str | None = None, note: str = ""
) -> PayoutJob:
    """Record a ``pending_admin`` challenge's result and create its payout job.

    O(1) in the number of stakers: one statement (``_RESOLVE_SQL``); the per-side totals on the
    challenge row decide payout or refund, the workers compute the amounts. Locks the
    challenge row, so of two concurrent resolves one wins and the other gets
    ``already_resolved``; the job's unique challenge is the database's guard. The fee rate,
    batch size and parallelism are copied onto the job. Expansion is sent after commit.
    ``note`` (why this outcome) is stored on the challenge as ``resolution_note``. An actor
    who created the challenge, was challenged in it or staked on it is refused
    (``conflict_of_interest``). Audited as ``challenge.resolve`` with the note.
    """
    if result not in Challenge.Result.values:
        raise InvalidInput(
            f"result must be one of {', '.join(Challenge.Result.values)}.", code="invalid_result"
        )
    rail = _rail_check(rail)
    note = _note_check(note)
    actor_id: int | None = getattr(actor, "pk", None)
    params = {
        "challenge_id": challenge_id,
        "actor_id": actor_id,
        "result": result,
        "side": WINNING_SIDE.get(result, ""),
        "now": timezone.now(),
        "note": note,
        "rail": rail,
        "parallelism": rail_parallelism(rail),
        "refund_rail": REFUND_RAIL,
        "refund_parallelism": rail_parallelism(REFUND_RAIL),
        "fee_bps": settings.PLATFORM_FEE_BPS,
        "batch_size": settings.PAYOUT_BATCH_SIZE,
    }
    # One statement, every write of which happens or none does: on its own it commits itself
    # (no BEGIN and COMMIT round trips, each of which waits for a core while a job pays).
    # Inside a caller's transaction it is durable as every staff action here, which refuses
    # to nest outside tests.
    in_transaction = (
        transaction.atomic(durable=True) if connection.in_atomic_block else nullcontext()
    )
    with in_transaction:
        try:
            with prepared_cursor() as cursor:
                cursor.execute(_RESOLVE_SQL, params)
                row = cursor.fetchone()
        except IntegrityError as exc:
            raise _already_started() from exc
        if row is None:
            raise NotFound("No such challenge.", code="challenge_not_found")
        challenge = row_model(Challenge, row)
        job_start = len(Challenge._meta.concrete_fields) + 1
        if row[job_start] is None:
            refusal = _challenge_refusal(
                challenge, actor_staked=row[job_start - 1], actor_id=actor_id
            )
            raise refusal or Conflict(
                f"Only challenges awaiting resolution can be resolved (this one is "
                f"{challenge.status}).",
                code="challenge_not_resolvable",
            )
        job = row_model(PayoutJob, row, start=job_start)
        transaction.on_commit(partial(expand_enqueue, job_id=job.pk))
    return job


def challenge_cancel(*, challenge_id: int, actor: Any, note: str = "") -> PayoutJob:
    """Cancel an unresolved challenge and create the job that refunds every stake in full.

    Allowed from ``pending``, ``active`` and ``pending_admin``; locks the challenge row (the
    staking service takes the same lock, so no stake lands after the cancel). ``note`` is
    stored as the challenge's ``resolution_note``. An actor with a stake in the outcome is
    refused (``conflict_of_interest``). Audited as ``challenge.cancel`` with the note.
    """
    note = _note_check(note)
    with transaction.atomic(durable=True):
        challenge = _challenge_locked(challenge_id, actor=actor)
        if challenge.status not in CANCELLABLE:
            raise Conflict(
                f"A {challenge.status} challenge cannot be cancelled.",
                code="challenge_not_cancellable",
            )
        challenge.status = Challenge.Status.CANCELLED
        challenge.resolution_note = note
        challenge.updated_at = timezone.now()
        challenge.save(update_fields=["status", "resolution_note", "updated_at"])
        job = _job_create(
            challenge=challenge,
            kind=PayoutJob.Kind.REFUND,
            rail=REFUND_RAIL,
            winning_side="",
            actor=actor,
        )
        audit_record(
            actor=actor,
            action="challenge.cancel",
            target_type="challenge",
            target_id=challenge.pk,
            details={"payout_job_id": job.pk, "note": note},
        )
    return job


# The challenges a cancellation names, one index probe each, however many were ever cancelled.
_REFUND_JOBS_SQL = f"""
{_JOB_INSERT}
SELECT c.id, 'refund', %(rail)s, 'queued', '', %(fee_bps)s, %(batch_size)s, %(parallelism)s,
       NULL, {_JOB_COUNTERS_ZERO}
FROM challenges_challenge AS c
WHERE c.id = ANY(%(ids)s) AND c.status = 'cancelled'
  AND EXISTS (SELECT 1 FROM challenges_stake AS s WHERE s.challenge_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM payouts_payoutjob AS j WHERE j.challenge_id = c.id)
ORDER BY c.id
ON CONFLICT (challenge_id) DO NOTHING
RETURNING id
"""  # noqa: S608 - fragments of this module, values as parameters


def refund_jobs_create_for_cancelled(*, challenge_ids: list[int]) -> list[int]:
    """Create a refund job for every challenge of ``challenge_ids`` that is cancelled, has
    stakes and has no job yet; return the new job ids (their expansion is sent after commit).

    One statement whatever the number of challenges (so it needs no transaction of its own);
    idempotent and safe to run twice at once
    (the unique challenge makes a concurrent run insert nothing). The ``challenges_cancelled``
    signal calls it inside the transaction that cancels them, so each refund job commits with
    its cancellation, and only the challenges just cancelled are read.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _REFUND_JOBS_SQL,
            {
                "rail": REFUND_RAIL,
                "fee_bps": settings.PLATFORM_FEE_BPS,
                "batch_size": settings.PAYOUT_BATCH_SIZE,
                "parallelism": rail_parallelism(REFUND_RAIL),
                "ids": challenge_ids,
            },
        )
        job_ids = [row[0] for row in cursor.fetchall()]
    for job_id in job_ids:
        transaction.on_commit(partial(expand_enqueue, job_id=job_id))
    return job_ids


def _job_locked(job_id: int) -> PayoutJob:
    job = PayoutJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such payout job.", code="job_not_found")
    return job


def _state_check(job: PayoutJob, action: str, allowed: tuple[str, ...]) -> None:
    if job.status not in allowed:
        raise Conflict(f"A {job.status} job cannot be {action}.", code="invalid_job_state")


def _audit(actor: Any, action: str, job: PayoutJob, **details: Any) -> None:
    audit_record(
        actor=actor,
        action=f"payout_job.{action}",
        target_type="payout_job",
        target_id=job.pk,
        details={"status": job.status, **details},
    )


def _job_transition(
    *, job_id: int, actor: Any, action: str, verb: str, allowed: tuple[str, ...], status: str
) -> PayoutJob:
    """Under the job row lock (call it in a transaction): check that a job in its state may be
    ``verb``, move it to ``status`` (a final status also sets ``finished_at``), audit
    ``action``."""
    job = _job_locked(job_id)
    _state_check(job, verb, allowed)
    job.status = status
    job.updated_at = timezone.now()
    fields = ["status", "updated_at"]
    if status not in PayoutJob.ACTIVE_STATUSES:
        job.finished_at = job.updated_at
        fields.append("finished_at")
    job.save(update_fields=fields)
    _audit(actor, action, job)
    return job


def payout_job_pause(*, job_id: int, actor: Any) -> PayoutJob:
    """Pause a running job: no batch commits after this commits (in-flight ones roll back)."""
    with transaction.atomic(durable=True):
        return _job_transition(
            job_id=job_id,
            actor=actor,
            action="pause",
            verb="paused",
            allowed=(PayoutJob.Status.RUNNING,),
            status=PayoutJob.Status.PAUSED,
        )


def payout_job_resume(*, job_id: int, actor: Any) -> PayoutJob:
    """Resume a paused job: it becomes running and gets fresh batches after commit."""
    with transaction.atomic(durable=True):
        job = _job_transition(
            job_id=job_id,
            actor=actor,
            action="resume",
            verb="resumed",
            allowed=(PayoutJob.Status.PAUSED,),
            status=PayoutJob.Status.RUNNING,
        )
        transaction.on_commit(
            partial(payout_batches_enqueue, job_id=job.pk, rail=job.rail, count=job.parallelism)
        )
    return job


def payout_job_cancel(*, job_id: int, actor: Any) -> PayoutJob:
    """Cancel an unfinished job: entries that never reached a rail become ``cancelled``.

    Two steps, so that the job row is never held while waiting for entry locks (that would
    deadlock with a batch holding entries and waiting for the job row): first the job becomes
    ``cancelled`` (audited), which makes every in-flight batch roll back; then its open entries
    are cancelled. If the process dies in between, the watchdog finishes the second step.
    Cancelled entries are never paid; their money stays in the challenge's escrow (exactly the
    cancelled amounts plus the uncollected fee), where staff can see it and refund it. On the
    Stripe rail an entry that may have reached Stripe is not cancelled blind: it stays open
    (the job shows it as uncertain) until Stripe's transfer list says whether it was paid
    (``payout_job_cancel_entries`` sends ``stripe_entries_reconcile``).
    """
    with transaction.atomic(durable=True):
        job = _job_transition(
            job_id=job_id,
            actor=actor,
            action="cancel",
            verb="cancelled",
            allowed=PayoutJob.ACTIVE_STATUSES,
            status=PayoutJob.Status.CANCELLED,
        )
        transaction.on_commit(partial(JOBS_FINISHED.inc, status=PayoutJob.Status.CANCELLED))
    payout_job_cancel_entries(job_id=job.pk)
    job.refresh_from_db()
    return job


def _failed_requeue(job: PayoutJob, failed: QuerySet[PayoutEntry]) -> int:
    """Under the job row lock: the given failed entries start afresh (``pending``, attempts
    reset); a finished job runs again and finalizes again (the fee is never collected twice)
    -- one that completed with failures when some entry was requeued, a ``failed`` one in any
    case (its error is cleared) -- and batches are sent after commit. Returns how many
    entries."""
    retried = failed.update(
        status=PayoutEntry.Status.PENDING,
        attempt_count=0,
        next_attempt_at=None,
        lease_until=None,
        failure_reason="",
    )
    if not retried and job.status != PayoutJob.Status.FAILED:
        return 0
    if job.status in FINISHED_RETRYABLE:
        job.status = PayoutJob.Status.RUNNING
        job.finished_at = None
        job.error = ""
    job.failed_count = F("failed_count") - retried
    job.updated_at = timezone.now()
    job.save(update_fields=["status", "finished_at", "error", "failed_count", "updated_at"])
    if job.status == PayoutJob.Status.RUNNING:
        transaction.on_commit(
            partial(payout_batches_enqueue, job_id=job.pk, rail=job.rail, count=job.parallelism)
        )
    return retried


# Jobs whose entries an enabled account requeues by itself; a failed job (its finalize failed)
# waits for staff, who must fix the cause first.
ACCOUNT_REQUEUE_STATES = (
    PayoutJob.Status.RUNNING,
    PayoutJob.Status.PAUSED,
    PayoutJob.Status.COMPLETED_WITH_FAILURES,
)


def payout_job_retry_failed(
    *, job_id: int, actor: Any, entry_ids: list[int] | None = None
) -> PayoutJob:
    """Give every failed entry of a job (or only ``entry_ids`` of them: the replay of one
    entry's dead letter) a fresh start (``pending``, attempts reset).

    Allowed while the job is running or paused, and after it completed with failures (it
    runs again and finalizes again; the fee is never collected twice). A ``failed`` job (its
    finalize failed for good) runs again too, once staff fixed the cause, whether or not it
    has failed entries: its error is cleared and its batches finalize it again. Set-based;
    audited with the number of entries retried. Failed Stripe entries are safe to send again:
    an entry is only failed once Stripe's transfer list showed no transfer for it.
    """
    with transaction.atomic(durable=True):
        job = _job_locked(job_id)
        _state_check(job, "retried", RETRYABLE)
        failed = PayoutEntry.objects.filter(entries_in(PayoutEntry.Status.FAILED), job=job)
        if entry_ids is not None:
            failed = failed.filter(pk__in=entry_ids)
        job_failed = job.status == PayoutJob.Status.FAILED
        retried = _failed_requeue(job, failed)
        if not retried and not job_failed:
            raise Conflict("This job has no failed entries.", code="no_failed_entries")
        _audit(actor, "retry_failed", job, entries=retried)
    job.refresh_from_db()
    return job


def payout_entries_requeue_connected(*, user_id: int, event_id: str) -> int:
    """The user's Stripe account can receive payouts now: every entry of theirs that failed
    with ``stripe_account_not_connected`` is queued again at once, no staff needed.

    Call it inside the transaction that applies the ``account.updated`` event (so the event,
    the account and the requeue commit together). Per job, locked in id order, the same
    set-based requeue as ``payout_job_retry_failed`` (running, paused and completed-with-
    failures jobs; a cancelled or failed job is for staff to decide), audited as
    ``payout_job.retry_failed`` with the reason and the event id. Returns how many entries.
    """
    failed = PayoutEntry.objects.filter(
        entries_in(PayoutEntry.Status.FAILED), user_id=user_id, failure_reason=ACCOUNT_NOT_CONNECTED
    )
    job_ids = sorted(set(failed.values_list("job_id", flat=True)))
    total = 0
    for job in (
        PayoutJob.objects.select_for_update()
        .filter(pk__in=job_ids, status__in=ACCOUNT_REQUEUE_STATES)
        .order_by("id")
    ):
        retried = _failed_requeue(job, failed.filter(job=job))
        if retried:
            _audit(
                None,
                "retry_failed",
                job,
                entries=retried,
                reason="stripe_account_enabled",
                user_id=user_id,
                event_id=event_id,
            )
        total += retried
    return total
