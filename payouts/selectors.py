"""Reads shared by the API, the admin and services."""

from django.db.models import QuerySet
from django.utils import timezone

from core.errors import NotFound
from core.models import DeadLetter
from payouts.models import PayoutJob


def payout_job_get(*, job_id: int) -> PayoutJob:
    job = PayoutJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such payout job.", code="job_not_found")
    return job


def payout_job_list(*, status: str | None = None) -> QuerySet[PayoutJob]:
    """Jobs, newest first, optionally in one status."""
    jobs = PayoutJob.objects.order_by("-id")
    return jobs.filter(status=status) if status else jobs


def payout_job_progress(*, job: PayoutJob) -> dict:
    """What staff see of a job: totals, counters, percent done, rate (entries/s) and ETA.

    The rate is entries finished per second since the job started (until it finished); the
    ETA is what remains at that rate, None when it cannot be estimated or the job is not
    moving.
    """
    done = job.completed_count + job.failed_count + job.cancelled_count
    finished = job.status not in PayoutJob.ACTIVE_STATUSES
    if job.total_entries:
        percent = round(100 * done / job.total_entries, 1)
    else:
        percent = 100.0 if finished else 0.0
    rate = None
    eta = None
    if job.started_at:
        elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
        rate = round(job.completed_count / elapsed, 1) if elapsed > 0 else None
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
        "total_amount": job.total_amount,
        "paid_amount": job.paid_amount,
        "fee_amount": job.fee_amount,
        "progress_percent": percent,
        "rate": rate,
        "eta_seconds": eta,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def dead_letter_list(*, status: str | None = None) -> QuerySet[DeadLetter]:
    letters = DeadLetter.objects.order_by("-id")
    return letters.filter(status=status) if status else letters
