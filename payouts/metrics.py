"""Payout metrics: counters bumped where money moves and Stripe is called, and the active jobs
read at scrape time. Imported by ``PayoutsConfig.ready`` so every process declares them.

Counters are bumped after the transaction that did the work commits, so a rolled-back batch
is never counted (see ``core.metrics`` for how counters from many processes add up).
"""

from collections.abc import Iterator

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.metrics import PREFIX, SharedCounter, SharedHistogram
from payouts.models import PayoutJob
from payouts.selectors import payout_job_rate

ENTRIES_PAID = SharedCounter(
    "payout_entries_paid", "Payout entries paid, by rail (ledger or stripe).", ["rail"]
)
AMOUNT_PAID = SharedCounter(
    "payout_amount_paid", "Amount paid out, in minor units of the currency, by rail.", ["rail"]
)
JOBS_FINISHED = SharedCounter(
    "payout_jobs_finished",
    "Payout jobs that ended, by final status (completed, completed_with_failures, cancelled).",
    ["status"],
)
STRIPE_REQUESTS = SharedCounter(
    "stripe_requests",
    "Stripe API requests, by operation and outcome class (ok, transient, permanent).",
    ["operation", "outcome"],
)
STRIPE_RATELIMIT_WAIT = SharedHistogram(
    "stripe_ratelimit_wait_seconds",
    "Time each Stripe request waited for a token of the shared rate limit.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALERTS_SENT = SharedCounter("alerts_sent", "Alerts sent to staff, by rule.", ["rule"])
RETENTION_DELETED = SharedCounter(
    "retention_deleted",
    "Rows (or task results) removed by the nightly retention, by kind.",
    ["kind"],
)


def payouts_paid_count(*, rail: str, entries: int, amount: int) -> None:
    ENTRIES_PAID.inc(entries, rail=rail)
    AMOUNT_PAID.inc(amount, rail=rail)


class JobsCollector(Collector):
    """Active jobs by status and each running job's payouts per second: one query over the
    active jobs only (the partial index ``payoutjob_active_idx``)."""

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            f"{PREFIX}_payout_jobs_active",
            "Payout jobs not finished yet, by status.",
            labels=["status"],
        )
        rate = GaugeMetricFamily(
            f"{PREFIX}_payout_job_payouts_per_second",
            "Entries paid per second since each running job started.",
            labels=["job_id", "rail"],
        )
        counts: dict[str, int] = dict.fromkeys(PayoutJob.ACTIVE_STATUSES, 0)
        now = timezone.now()
        for job in PayoutJob.objects.filter(status__in=PayoutJob.ACTIVE_STATUSES).only(
            "status", "rail", "completed_count", "started_at", "finished_at"
        ):
            counts[job.status] += 1
            if job.status == PayoutJob.Status.RUNNING:
                rate.add_metric([str(job.pk), job.rail], payout_job_rate(job=job, now=now) or 0.0)
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield from (by_status, rate)
