"""Payout tasks (queue ``payouts``): thin wrappers that parse ids and call one service.

Each is idempotent and crash-safe because its service is (see ``payouts.services.engine``);
retries and dead letters come from ``core.tasks.BaseTask``.
"""

from dataclasses import asdict

from celery import shared_task
from django.conf import settings

from core.errors import DomainError
from core.tasks import BaseTask
from payouts.services.alerts import ops_alerts_check
from payouts.services.audit import platform_audit_run
from payouts.services.engine import (
    payout_batch_ledger,
    payout_job_expand,
    payout_job_expand_chunk,
    payout_job_notify,
    payout_job_slice,
)
from payouts.services.jobs import payout_job_retry_failed
from payouts.services.retention import retention_run
from payouts.services.stripe_rail import payout_batch_stripe, stripe_entries_reconcile
from payouts.services.watchdog import WATCHDOG_STALE_SECONDS, payout_watchdog


class PayoutJobTask(BaseTask):
    """Dead letters of job tasks name their job, so staff find them by ``payout_job:<id>``."""

    def dead_letter_subject(self, args: tuple, kwargs: dict) -> str:
        job_id = self.context_tags(args, kwargs).get("job_id")
        return f"payout_job:{job_id}" if job_id is not None else ""


# Settling a million stakes (one pass and one sort) takes seconds, hence the roomy limits.
@shared_task(base=PayoutJobTask, time_limit=600, soft_time_limit=540)
def payout_job_expand_task(job_id: int) -> bool:
    # A small first slice: the job starts paying at once, ahead of the jobs already paying.
    return payout_job_expand(job_id=int(job_id), start_size=settings.PAYOUT_START_SIZE) is not None


@shared_task(base=PayoutJobTask, time_limit=300, soft_time_limit=240)
def payout_job_expand_chunk_task(
    job_id: int, terms: dict, from_stake_id: int, analyze: bool = False
) -> int | None:
    return payout_job_expand_chunk(
        job_id=int(job_id), terms=terms, from_stake_id=int(from_stake_id), analyze=bool(analyze)
    )


# A slice creates and pays batch_size entries in one transaction (as long as a batch).
@shared_task(base=PayoutJobTask, bind=True, time_limit=120, soft_time_limit=100)
def payout_job_slice_task(self, job_id: int, terms: dict, starts: list[int], size: int) -> int:
    return payout_job_slice(
        job_id=int(job_id),
        terms=terms,
        starts=[int(s) for s in starts],
        size=int(size),
        # Handed back by the broker after its worker died (visibility timeout or restore).
        redelivered=bool((self.request.delivery_info or {}).get("redelivered")),
    )


# One INSERT ... SELECT of a notification per paid staker: a million take a while.
@shared_task(base=PayoutJobTask, time_limit=900, soft_time_limit=840)
def payout_job_notify_task(job_id: int) -> int:
    return payout_job_notify(job_id=int(job_id))


@shared_task(base=PayoutJobTask, time_limit=120, soft_time_limit=100)
def payout_batch_ledger_task(job_id: int, after_id: int = 0, limit: int = 0) -> int:
    return payout_batch_ledger(job_id=int(job_id), after_id=int(after_id), limit=int(limit)).claimed


# Routed to the payouts_stripe queue. Runs for STRIPE_BATCH_SECONDS plus at most one claim's
# lease (30 s + 120 s by default), inside the default limits (CELERY_TASK_TIME_LIMIT).
@shared_task(base=PayoutJobTask)
def payout_batch_stripe_task(job_id: int) -> int:
    return payout_batch_stripe(job_id=int(job_id))


# Routed to the payouts_stripe queue: it asks Stripe (a walk of the job's transfer group).
@shared_task(base=PayoutJobTask, time_limit=600, soft_time_limit=540)
def payout_job_reconcile_task(job_id: int) -> dict:
    result = stripe_entries_reconcile(job_id=int(job_id))
    return {"paid": result.paid, "cancelled": result.cancelled, "uncertain": result.uncertain}


@shared_task(time_limit=120, soft_time_limit=100)
def payout_watchdog_task(stale_seconds: int = WATCHDOG_STALE_SECONDS) -> dict:
    # Beat's schedule passes no arguments; the chaos run's fast schedule passes a short one.
    report = payout_watchdog(stale_seconds=int(stale_seconds))
    return {
        "expansions": report.expansions,
        "restarted": report.restarted,
        "cancelled_entries": report.cancelled_entries,
        "notified": report.notified,
    }


@shared_task(base=PayoutJobTask, time_limit=60, soft_time_limit=50)
def payout_entry_retry_task(job_id: int, entry_id: int) -> bool:
    """What replaying a failed entry's dead letter runs: that entry is paid again.

    A dead letter replayed after the entry was retried some other way (``retry-failed``) or
    after its job ended finds nothing to do; that is an answer, not a new failure.
    """
    try:
        payout_job_retry_failed(job_id=int(job_id), actor=None, entry_ids=[int(entry_id)])
    except DomainError:
        return False
    return True


# Beat, hourly, on the scheduler queue: the incremental ledger check and the audit of recent
# jobs take seconds, the full one (``full=True``, by hand) about 20 s on ten million transfers.
# The limit stays inside the ops workers' stop grace period (deploy/processes.py).
@shared_task(time_limit=600, soft_time_limit=540)
def platform_audit_task(full: bool = False) -> dict:
    audit = platform_audit_run(full=bool(full))
    return {
        "ok": audit.ok,
        "ledger_mode": audit.ledger.mode,
        "ledger_watermark": audit.ledger.watermark,
        "jobs": audit.payouts.jobs,
        "entries": audit.payouts.entries,
        "violations": audit.violations[:100],
    }


# Routed to the scheduler queue (config.settings); beat sends it every minute.
@shared_task(time_limit=60, soft_time_limit=50)
def ops_alerts_check_task() -> list[str]:
    return [f"{alert.rule} {alert.subject}" for alert in ops_alerts_check()]


# Nightly; the service stops starting batches after 10 minutes (a first run over a large
# backlog continues the next night), inside the ops pool's stop grace period.
@shared_task(time_limit=900, soft_time_limit=840)
def retention_run_task() -> dict:
    return asdict(retention_run())
