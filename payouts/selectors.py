"""Reads shared by the API, the admin and services."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, models
from django.db.models import QuerySet
from django.utils import timezone

from challenges.models import Stake
from core.errors import NotFound
from core.models import DeadLetter
from payouts.models import (
    ENTRY_STATUS_COLUMNS,
    ConnectedAccount,
    PayoutAttempt,
    PayoutEntry,
    PayoutJob,
    entries_in,
)


def payout_job_get(*, job_id: int) -> PayoutJob:
    job = PayoutJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such payout job.", code="job_not_found")
    return job


def payout_job_list(
    *, status: str | None = None, challenge_id: int | None = None
) -> QuerySet[PayoutJob]:
    """Jobs, newest first, optionally in one status and/or of one challenge."""
    jobs = PayoutJob.objects.order_by("-id")
    if status:
        jobs = jobs.filter(status=status)
    if challenge_id is not None:
        jobs = jobs.filter(challenge_id=challenge_id)
    return jobs


def payout_job_rate(*, job: PayoutJob, now: datetime | None = None) -> float | None:
    """Entries paid per second since the job started (until it finished); None before it
    started. What staff see, what the metrics export, and what the slow-job alert checks."""
    if not job.started_at:
        return None
    elapsed = ((job.finished_at or now or timezone.now()) - job.started_at).total_seconds()
    return job.completed_count / elapsed if elapsed > 0 else None


def payout_job_progress(*, job: PayoutJob) -> dict:
    """What staff see of a job: totals, counters, percent done, rate (entries/s) and ETA.

    The rate is entries finished per second since the job started (until it finished); the
    ETA is what remains at that rate, None when it cannot be estimated or the job is not
    moving.
    """
    done = job.completed_count + job.failed_count + job.cancelled_count
    finished = job.status not in PayoutJob.ACTIVE_STATUSES
    # A cancelled Stripe job's open entries may have reached Stripe: until Stripe's transfer
    # list decides (paid or cancelled), they are uncertain.
    uncertain = (
        job.total_entries - done
        if job.status == PayoutJob.Status.CANCELLED and job.rail == PayoutJob.Rail.STRIPE
        else 0
    )
    if job.total_entries:
        percent = round(100 * done / job.total_entries, 1)
    else:
        percent = 100.0 if finished else 0.0
    rate = payout_job_rate(job=job)
    rate = round(rate, 1) if rate is not None else None
    eta = None
    if rate and job.status == PayoutJob.Status.RUNNING:
        eta = round((job.total_entries - done) / rate, 1)
    return {
        "id": job.pk,
        "challenge": job.challenge_id,
        "kind": job.kind,
        "rail": job.rail,
        "status": job.status,
        "total_entries": job.total_entries,
        "completed": job.completed_count,
        "failed": job.failed_count,
        "cancelled": job.cancelled_count,
        "uncertain": uncertain,
        "total_amount": job.total_amount,
        "paid_amount": job.paid_amount,
        "fee_amount": job.fee_amount,
        "progress_percent": percent,
        "rate": rate,
        "eta_seconds": eta,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def payout_job_summary(*, challenge_id: int) -> dict | None:
    """``{status, progress_percent}`` of a challenge's job, or None: the progress row of a
    challenge (registered with ``challenges.providers`` in ``PayoutsConfig.ready``)."""
    job = PayoutJob.objects.filter(challenge_id=challenge_id).first()
    if job is None:
        return None
    progress = payout_job_progress(job=job)
    return {"status": progress["status"], "progress_percent": progress["progress_percent"]}


def payout_entry_list(
    *, job_id: int, status: str | None = None, failure_reason: str | None = None
) -> QuerySet[PayoutEntry]:
    """A job's entries in id order (cursor-paginated by callers), optionally of one status and
    one failure reason. The (job, id) index serves them; a status that few entries have is
    found through the index of its own column (``entries_in``) rather than by
    reading the job's entries until a page is full."""
    entries = PayoutEntry.objects.filter(job_id=job_id).select_related("user").order_by("id")
    if status:
        entries = entries.filter(entries_in(status))
    if failure_reason:
        entries = entries.filter(failure_reason=failure_reason)
    return entries


# Counts on the console stop here: past it a page shows "10000+" rather than scan a million
# rows to say exactly how many.
COUNT_CAP = 10_000

# Failed and retryable entries carry their failure reason, which the job's exception index
# holds.
_FAILURE_REASONS_SQL = """
SELECT failure_reason, count(*) FROM (
    SELECT failure_reason FROM payouts_payoutentry
    WHERE job_id = %(job_id)s AND status IN ('failed', 'retryable') AND failure_reason <> ''
    LIMIT %(cap)s
) AS capped
GROUP BY failure_reason ORDER BY count(*) DESC, failure_reason
"""


@dataclass(frozen=True, slots=True)
class Count:
    """A count that stops at ``COUNT_CAP``: ``capped`` means "at least this many"."""

    value: int
    capped: bool = False

    def __str__(self) -> str:
        return f"{self.value}+" if self.capped else str(self.value)


def _capped(value: int, cap: int = COUNT_CAP) -> Count:
    return Count(min(value, cap), value >= cap)


def payout_entry_status_counts(*, job: PayoutJob) -> dict[str, Count]:
    """How many of a job's entries are in each status, exactly, at the cost of the entries in
    flight whatever the job's size: the terminal ones from the job's counters (``completed``
    includes the entries reversed since), the ones in flight and the reversed ones through the
    indexes of their own columns (one query), and ``pending``, the rest, by difference
    (entries still being created count as pending)."""
    found = [s for s in ENTRY_STATUS_COLUMNS if s != PayoutEntry.Status.FAILED]
    first, *rest = (
        PayoutEntry.objects.filter(entries_in(status), job_id=job.pk)
        .values_list("status")
        .annotate(count=models.Count("id"))
        .order_by()
        for status in found
    )
    counted = dict.fromkeys(found, 0) | dict(first.union(*rest, all=True))
    terminal = {
        PayoutEntry.Status.COMPLETED: job.completed_count,
        PayoutEntry.Status.FAILED: job.failed_count,
        PayoutEntry.Status.CANCELLED: job.cancelled_count,
    }
    in_flight = counted[PayoutEntry.Status.PROCESSING] + counted[PayoutEntry.Status.RETRYABLE]
    pending = max(job.total_entries - sum(terminal.values()) - in_flight, 0)
    values = {PayoutEntry.Status.PENDING: pending} | terminal | counted
    return {status: Count(values[status]) for status in PayoutEntry.Status.values}


def payout_entry_failure_reasons(*, job_id: int) -> list[tuple[str, Count]]:
    """Failed and retryable entries of a job by failure reason, most frequent first, over at
    most ``COUNT_CAP`` of them (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_FAILURE_REASONS_SQL, {"job_id": job_id, "cap": COUNT_CAP})
        rows = cursor.fetchall()
    capped = sum(count for _, count in rows) >= COUNT_CAP
    return [(reason, Count(count, capped)) for reason, count in rows]


def payout_job_dead_letters(*, job_id: int, limit: int = 20) -> list[DeadLetter]:
    """The newest dead letters of a job's tasks (every payouts task takes the job id first)."""
    return list(
        DeadLetter.objects.filter(task_name__startswith="payouts.tasks.", args__0=job_id).order_by(
            "-id"
        )[:limit]
    )


def payout_attempts_by_entry(*, entry_ids: list[int]) -> dict[int, list[PayoutAttempt]]:
    """The Stripe attempts of each given entry, oldest first (one query for a page)."""
    found: dict[int, list[PayoutAttempt]] = defaultdict(list)
    for attempt in PayoutAttempt.objects.filter(entry_id__in=entry_ids).order_by("entry_id", "id"):
        found[attempt.entry_id].append(attempt)
    return {entry_id: found.get(entry_id, []) for entry_id in entry_ids}


def dead_letter_list(*, status: str | None = None) -> QuerySet[DeadLetter]:
    letters = DeadLetter.objects.order_by("-id")
    return letters.filter(status=status) if status else letters


def winners_without_connected_account(*, challenge_id: int, side: str) -> Count:
    """How many stakers of ``side`` have no Stripe account with payouts enabled: who a Stripe
    job paying that side would fail (``stripe_account_not_connected``). Stops at
    ``COUNT_CAP``."""
    enabled = ConnectedAccount.objects.filter(payouts_enabled=True).values("user_id")
    stakers = Stake.objects.filter(challenge_id=challenge_id, side=side).exclude(
        user_id__in=enabled
    )
    return _capped(stakers[:COUNT_CAP].count())
