"""The watchdog (beat, every minute): the safety net under the self-driving batches.

It is never the main driver -- throughput comes from batches that re-enqueue themselves -- but
everything that a lost message or a dead worker can leave behind is picked up here: stalled
expansions and batches, interrupted cancellations, lost notifications. (Refund jobs of
cancelled challenges need no net: each commits with its cancellation, ``challenges.signals``.)
"""

from dataclasses import dataclass
from functools import partial

from django.db import connection, transaction
from django.db.models import F

from core.queues import send_task
from payouts.models import PayoutJob
from payouts.services.engine import (
    EXPANDABLE,
    NOTIFY_TASK,
    entries_missing,
    expand_enqueue,
    payout_batches_enqueue,
    payout_job_cancel_entries,
)
from payouts.services.stripe_client import ACCOUNT_NOT_CONNECTED

# A job that made no progress for this long has no batch in flight (a batch takes well under a
# second), so the watchdog sends it new ones.
WATCHDOG_STALE_SECONDS = 60

_STALE_SQL = """
UPDATE payouts_payoutjob SET updated_at = now()
WHERE status = ANY(%s) AND updated_at < now() - make_interval(secs => %s)
RETURNING id, rail, parallelism
"""

# Finished jobs of the last day whose last decided entry has no notification: the
# notification task was lost (the notifications of a job are inserted by one statement, all or
# none). The key is the one payout_job_notify gives that entry.
_UNNOTIFIED_SQL = """
SELECT j.id FROM payouts_payoutjob AS j
WHERE j.status IN ('completed', 'completed_with_failures')
  AND j.completed_count + j.failed_count > 0
  AND j.finished_at BETWEEN now() - interval '1 day' AND now() - make_interval(secs => %s)
  AND NOT EXISTS (
      SELECT 1 FROM notifications_notification AS n
      WHERE n.dedup_key = (
          SELECT CASE WHEN e.status = 'completed' THEN 'payout:'
                      WHEN e.failure_reason = %s THEN 'payout_account_needed:'
                      ELSE 'payout_failed:' END || e.id
          FROM payouts_payoutentry AS e
          WHERE e.job_id = j.id AND e.status IN ('completed', 'failed')
          ORDER BY e.id DESC LIMIT 1
      )
  )
ORDER BY j.id
"""


@dataclass(frozen=True, slots=True)
class WatchdogReport:
    expansions: list[int]
    restarted: list[int]
    cancelled_entries: int
    notified: list[int]


def payout_watchdog(*, stale_seconds: int = WATCHDOG_STALE_SECONDS) -> WatchdogReport:
    """The safety net under the self-driving batches (beat, every minute).

    Re-sends the expansion of jobs stuck in ``queued``/``expanding`` or missing entries, and
    batches of ``running`` jobs without progress for ``stale_seconds``; finishes interrupted
    cancellations (on the Stripe rail it asks Stripe again about entries still uncertain);
    re-sends lost notifications. Safe to run twice at once: each stalled job is picked by an
    UPDATE that refreshes ``updated_at``, so a concurrent run skips it, and everything it
    sends is idempotent.
    """
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_STALE_SQL, [list(EXPANDABLE), stale_seconds])
        expansions = [row[0] for row in cursor.fetchall()]
        cursor.execute(_STALE_SQL, [[PayoutJob.Status.RUNNING], stale_seconds])
        restarted = []
        for job_id, rail, parallelism in cursor.fetchall():
            if entries_missing(PayoutJob.objects.get(pk=job_id)):
                expansions.append(job_id)
            else:
                restarted.append(job_id)
                transaction.on_commit(
                    partial(payout_batches_enqueue, job_id=job_id, rail=rail, count=parallelism)
                )
        for job_id in expansions:
            transaction.on_commit(partial(expand_enqueue, job_id=job_id))
        cursor.execute(_UNNOTIFIED_SQL, [stale_seconds, ACCOUNT_NOT_CONNECTED])
        notified = [row[0] for row in cursor.fetchall()]
        for job_id in notified:
            transaction.on_commit(partial(send_task, NOTIFY_TASK, args=[job_id]))
    cancelled = 0
    unfinished = PayoutJob.objects.filter(
        status=PayoutJob.Status.CANCELLED,
        total_entries__gt=F("completed_count") + F("failed_count") + F("cancelled_count"),
    )
    for job in unfinished:
        cancelled += payout_job_cancel_entries(job_id=job.pk)
        if entries_missing(job):
            expand_enqueue(job_id=job.pk)
    return WatchdogReport(expansions, restarted, cancelled, notified)
