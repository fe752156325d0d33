"""The staff console's figures: the platform at a glance, for the admin index and
``GET /api/admin/dashboard/``.

Every figure is a bounded read, so the page costs the same with a million entries and a
million notifications: partial indexes (awaiting challenges, active, failed and recently
finished jobs, undelivered notifications, open dead letters), counts that stop at
``COUNT_CAP`` ("10000+"), and the last day's payout figures summed from the counters of the
jobs that finished in it rather than from their entries. The number of queries is fixed.
Queue depths come from the broker (one ``LLEN`` per queue) and the workers of each queue from
a remote-control broadcast cached for a few seconds, so a page refresh never waits on it.
"""

import json
import logging
from datetime import timedelta
from functools import cache
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db import connection
from django.db.models import Min
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from challenges.models import Challenge
from core.models import DeadLetter
from notifications.models import Notification
from payouts.models import PayoutJob
from payouts.selectors import COUNT_CAP, Count, payout_job_progress

logger = logging.getLogger(__name__)

QUEUES = ("payouts", "payouts_stripe", "scheduler", "notifications", "default")
RUNNING_JOBS_SHOWN = 10
AWAITING_SHOWN = 5
PERIODIC_TASKS_SHOWN = 50
# django-celery-beat writes ``last_run_at`` back every few minutes (``sync_every``), so a task
# is late only once it is overdue by more than that.
PERIODIC_GRACE = timedelta(minutes=5)
WORKERS_CACHE_SECONDS = 10
INSPECT_TIMEOUT = 0.5
# Notifications still undelivered this long after they were stored are stuck, not in flight.
UNDELIVERED_AFTER = timedelta(minutes=5)

_CAPPED_COUNT_SQL = "SELECT count(*) FROM ({query} LIMIT %s) AS capped"


def _capped_count(queryset) -> Count:
    """``count(*)`` of at most ``COUNT_CAP`` rows of ``queryset`` (one query)."""
    sql, params = queryset.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(_CAPPED_COUNT_SQL.format(query=sql), [*params, COUNT_CAP])
        value = cursor.fetchone()[0]
    return Count(value, value >= COUNT_CAP)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)


def _workers_by_queue() -> dict[str, list[str]]:
    """Which workers consume each queue: a broadcast answered within ``INSPECT_TIMEOUT``,
    cached in Redis for ``WORKERS_CACHE_SECONDS`` so that at most one page a few seconds waits
    for it."""
    key = "console:workers_by_queue"
    cached = _redis().get(key)
    if cached is not None:
        return json.loads(cached)
    replies = current_app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for worker, queues in sorted(replies.items()):
        for queue in queues or []:
            by_queue.setdefault(queue["name"], []).append(worker)
    _redis().set(key, json.dumps(by_queue), ex=WORKERS_CACHE_SECONDS)
    return by_queue


def _queues() -> list[dict[str, Any]]:
    try:
        pipe = _redis().pipeline()
        for name in QUEUES:
            pipe.llen(name)
        depths = pipe.execute()
        workers = _workers_by_queue()
    # The broker being down is itself a figure to show, not a reason to fail the page.
    except (redis.RedisError, OSError) as exc:
        logger.warning("console: broker unreachable: %r", exc)
        return [{"name": name, "depth": None, "workers": []} for name in QUEUES]
    return [
        {"name": name, "depth": depth, "workers": workers.get(name, [])}
        for name, depth in zip(QUEUES, depths, strict=True)
    ]


def _periodic_tasks(now) -> list[dict[str, Any]]:
    tasks = PeriodicTask.objects.filter(enabled=True).select_related(
        "interval", "crontab", "solar", "clocked"
    )
    rows = []
    for task in tasks.order_by("name")[:PERIODIC_TASKS_SHOWN]:
        late = task.last_run_at is None
        if task.last_run_at is not None and not task.one_off:
            overdue = -task.schedule.remaining_estimate(task.last_run_at)
            late = overdue > PERIODIC_GRACE
        rows.append(
            {
                "id": task.pk,
                "name": task.name,
                "task": task.task,
                "last_run_at": task.last_run_at,
                "total_run_count": task.total_run_count,
                "late": late,
            }
        )
    return rows


_LAST_DAY_SQL = """
SELECT count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'completed_with_failures'),
       count(*) FILTER (WHERE status = 'failed'),
       coalesce(sum(completed_count), 0),
       coalesce(sum(failed_count), 0)
FROM payouts_payoutjob
WHERE finished_at >= %s
"""


def _last_day(since) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(_LAST_DAY_SQL, [since])
        completed, with_failures, failed, paid, unpaid = (int(v) for v in cursor.fetchone())
    attempted = paid + unpaid
    return {
        "jobs_completed": completed,
        "jobs_completed_with_failures": with_failures,
        "jobs_failed": failed,
        "entries_paid": paid,
        "entries_failed": unpaid,
        "success_rate": round(100 * paid / attempted, 2) if attempted else None,
    }


def console_dashboard() -> dict[str, Any]:
    """Every figure of the console, each with the admin list behind it (``*_url`` keys are
    admin paths). A fixed number of bounded queries, whatever the size of the tables."""
    now = timezone.now()
    awaiting = Challenge.objects.filter(status=Challenge.Status.PENDING_ADMIN)
    oldest_due = awaiting.aggregate(oldest=Min("due_date"))["oldest"]
    active = PayoutJob.objects.filter(status__in=PayoutJob.ACTIVE_STATUSES)
    running = active.select_related("challenge").order_by("id")[:RUNNING_JOBS_SHOWN]
    stuck = Notification.objects.filter(
        delivered_at__isnull=True, created_at__lt=now - UNDELIVERED_AFTER
    )
    return {
        "generated_at": now,
        "count_cap": COUNT_CAP,
        "awaiting": {
            "count": _capped_count(awaiting),
            "oldest_due_date": oldest_due,
            "oldest_age_seconds": int((now - oldest_due).total_seconds()) if oldest_due else None,
            "oldest": [
                {"id": c.pk, "title": c.title, "due_date": c.due_date}
                for c in awaiting.order_by("due_date", "id")[:AWAITING_SHOWN]
            ],
            "url": "/admin/challenges/challenge/?status__exact=pending_admin",
        },
        "jobs": {
            "active_count": _capped_count(active),
            "failed_count": _capped_count(PayoutJob.objects.filter(status="failed")),
            "running": [
                {**payout_job_progress(job=job), "challenge_title": job.challenge.title}
                for job in running
            ],
            "active_url": "/admin/payouts/payoutjob/?status__in="
            + ",".join(PayoutJob.ACTIVE_STATUSES),
            "failed_url": "/admin/payouts/payoutjob/?status__exact=failed",
        },
        "last_24h": {
            **_last_day(now - timedelta(hours=24)),
            "url": "/admin/payouts/payoutjob/?finished_at__gte="
            + (now - timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S"),
        },
        "dead_letters": {
            "open_count": _capped_count(DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)),
            "url": "/admin/core/deadletter/?status__exact=open",
        },
        "notifications": {
            "stuck_count": _capped_count(stuck),
            "url": "/admin/notifications/notification/?delivered=no",
        },
        "queues": _queues(),
        "flower_url": settings.FLOWER_URL,
        "periodic_tasks": _periodic_tasks(now),
    }


def dashboard_json(value: Any) -> Any:
    """The dashboard as plain JSON: each capped count becomes ``{value, capped}``."""
    if isinstance(value, Count):
        return {"value": value.value, "capped": value.capped}
    if isinstance(value, dict):
        return {key: dashboard_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [dashboard_json(item) for item in value]
    return value
