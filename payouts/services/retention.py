"""Nightly retention: what is old and done goes, in bounded batches; money records stay.

Deleted: read notifications older than ``RETENTION_NOTIFICATIONS_DAYS`` (90), dead letters
replayed more than ``RETENTION_EVENTS_DAYS`` (30) ago, Stripe webhook events received more than
``RETENTION_EVENTS_DAYS`` ago, and task results past ``CELERY_RESULT_EXPIRES``. Never touched:
ledger transfers, payout entries and jobs, the audit trail, open dead letters, unread
notifications. It lives here, the lowest app that knows every table it prunes; each app's own
service does the deleting.
"""

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from core.retention import task_results_expire
from core.services import dead_letters_prune
from notifications.services import notifications_prune
from payouts.metrics import RETENTION_DELETED
from payouts.services.stripe_webhooks import stripe_events_prune

# No batch starts after this many seconds (well inside the task's time limit): a first run
# over years of rows stops cleanly, and the following nights delete the rest.
RUN_SECONDS = 600
# Task result keys looked at per run: a night's results of a busy system, at a few
# milliseconds per thousand keys.
TASK_RESULTS_SCAN_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    notifications: int
    dead_letters: int
    stripe_events: int
    task_results: int


def retention_run(*, now: datetime | None = None) -> RetentionReport:
    """Prune every kind once; return (and count in ``stakehold_retention_deleted_total``) how
    many rows of each went. Each kind is deleted ``RETENTION_BATCH_SIZE`` rows per short
    transaction; two runs at once split the rows between them (``SKIP LOCKED``) and together
    delete each row once. Stops starting batches after ``RUN_SECONDS``."""
    now = now or timezone.now()
    batch = settings.RETENTION_BATCH_SIZE
    until = time.monotonic() + RUN_SECONDS
    events_before = now - timedelta(days=settings.RETENTION_EVENTS_DAYS)
    report = RetentionReport(
        notifications=notifications_prune(
            created_before=now - timedelta(days=settings.RETENTION_NOTIFICATIONS_DAYS),
            batch_size=batch,
            until=until,
        ),
        dead_letters=dead_letters_prune(
            replayed_before=events_before, batch_size=batch, until=until
        ),
        stripe_events=stripe_events_prune(
            received_before=events_before, batch_size=batch, until=until
        ),
        task_results=task_results_expire(scan_limit=TASK_RESULTS_SCAN_LIMIT),
    )
    for kind, count in asdict(report).items():
        RETENTION_DELETED.inc(count, kind=kind)
    return report
