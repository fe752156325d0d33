"""Operational alerts, evaluated every minute by beat (``payouts.tasks.ops_alerts_check_task``).

Rules (thresholds from settings), each with the subject it is about:

- ``job_too_long`` (the job): queued, expanding or running for more than
  ``ALERT_JOB_MAX_SECONDS`` since it was created (a paused job is staff's choice);
- ``job_failures`` (the job): finished ``completed_with_failures``, or ``failed`` to
  finalize, in the last ``ALERT_REPEAT_SECONDS``;
- ``job_slow`` (the job): running for more than ``ALERT_SLOW_GRACE_SECONDS`` at fewer than
  ``ALERT_MIN_PAYOUTS_PER_S`` payouts/s;
- ``queue_unserved`` (the queue): its oldest message is ``ALERT_QUEUE_UNSERVED_SECONDS`` old
  and no worker consuming it was seen for as long;
- ``periodic_task_late`` (the periodic task): enabled and not sent for three of its
  intervals, plus the three minutes beat may take to write a run down;
- ``dead_letters_piling`` (all dead letters): ``ALERT_DEAD_LETTERS_OPEN`` or more wait for
  staff.

Each alert goes out at most once per (rule, subject) per ``ALERT_REPEAT_SECONDS`` (an hour):
a Redis script compares the last sending time with now and claims the sending atomically, so
two evaluations at once send it once. Sending means: a ``platform_alert`` notification
(``data.rule`` names the rule) to every active staff user, an ``ops.alert`` event on
``private-staff``, a warning to Sentry when it is configured (grouped per rule and subject), a
log line, and ``stakehold_alerts_sent_total{rule}``.

The queue rule cannot fire when the ``scheduler`` queue itself has no worker (this task runs
there): ``stakehold_queue_workers == 0`` in Prometheus covers that case (README).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.queues import queue_states
from core.redis_client import redis_script
from core.selectors import dead_letters_open_by_task, periodic_task_states
from core.sentry import sentry_message_capture
from notifications.models import Notification
from notifications.services import staff_event_publish_on_commit, staff_notify
from payouts.metrics import ALERTS_SENT
from payouts.models import PayoutJob
from payouts.selectors import payout_job_rate

logger = logging.getLogger(__name__)

# A job's first minute says little about its speed (expansion, the first batches).
ALERT_SLOW_GRACE_SECONDS = 60
STAFF_EVENT = "ops.alert"


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    subject: str
    title: str
    detail: str
    # Extra facts for staff and Sentry tags (ids, figures).
    data: dict = field(default_factory=dict)


def _jobs_too_long(now: datetime) -> Iterator[Alert]:
    limit = settings.ALERT_JOB_MAX_SECONDS
    jobs = PayoutJob.objects.filter(
        status__in=[PayoutJob.Status.QUEUED, PayoutJob.Status.EXPANDING, PayoutJob.Status.RUNNING],
        created_at__lt=now - timedelta(seconds=limit),
    ).order_by("id")
    for job in jobs:
        minutes = int((now - job.created_at).total_seconds() // 60)
        yield Alert(
            "job_too_long",
            f"payout_job:{job.pk}",
            f"Payout job #{job.pk} is still {job.status} after {minutes} minutes",
            f"Job #{job.pk} ({job.rail}, challenge #{job.challenge_id}) was created "
            f"{minutes} minutes ago; the limit is {limit // 60}. Progress: "
            f"{job.completed_count + job.failed_count} of {job.total_entries} entries.",
            {"job_id": job.pk, "rail": job.rail, "status": job.status},
        )


def _jobs_with_failures(now: datetime) -> Iterator[Alert]:
    # The finished jobs of the last hour, by the partial index on finished_at.
    jobs = PayoutJob.objects.filter(
        status__in=[PayoutJob.Status.COMPLETED_WITH_FAILURES, PayoutJob.Status.FAILED],
        finished_at__gte=now - timedelta(seconds=settings.ALERT_REPEAT_SECONDS),
    ).order_by("id")
    for job in jobs:
        if job.status == PayoutJob.Status.FAILED:
            yield Alert(
                "job_failures",
                f"payout_job:{job.pk}",
                f"Payout job #{job.pk} failed to finalize",
                f"Job #{job.pk} ({job.rail}, challenge #{job.challenge_id}) stopped: "
                f"{job.error[:500]} Fix the cause, then retry the job.",
                {"job_id": job.pk, "rail": job.rail, "status": job.status},
            )
            continue
        yield Alert(
            "job_failures",
            f"payout_job:{job.pk}",
            f"Payout job #{job.pk} finished with {job.failed_count} failed entries",
            f"Job #{job.pk} ({job.rail}, challenge #{job.challenge_id}) paid "
            f"{job.completed_count} entries and failed {job.failed_count}; their money stays "
            "in escrow. See the dead letters, then retry the failed entries.",
            {"job_id": job.pk, "rail": job.rail, "failed": job.failed_count},
        )


def _jobs_slow(now: datetime) -> Iterator[Alert]:
    minimum = settings.ALERT_MIN_PAYOUTS_PER_S
    jobs = PayoutJob.objects.filter(
        status=PayoutJob.Status.RUNNING,
        started_at__lt=now - timedelta(seconds=ALERT_SLOW_GRACE_SECONDS),
    ).order_by("id")
    for job in jobs:
        rate = payout_job_rate(job=job, now=now) or 0.0
        if rate < minimum:
            yield Alert(
                "job_slow",
                f"payout_job:{job.pk}",
                f"Payout job #{job.pk} pays {rate:.1f} entries/s",
                f"Job #{job.pk} ({job.rail}) has paid {job.completed_count} of "
                f"{job.total_entries} entries at {rate:.1f}/s, below {minimum:g}/s.",
                {"job_id": job.pk, "rail": job.rail, "rate": round(rate, 2)},
            )


def _queues_unserved(now: datetime) -> Iterator[Alert]:
    limit = settings.ALERT_QUEUE_UNSERVED_SECONDS
    for queue in queue_states():
        waiting = queue.depth > 0 and (
            queue.oldest_age_seconds is None or queue.oldest_age_seconds >= limit
        )
        unserved = queue.workers == 0 and (
            queue.last_worker_seen_seconds is None or queue.last_worker_seen_seconds >= limit
        )
        if waiting and unserved:
            yield Alert(
                "queue_unserved",
                f"queue:{queue.name}",
                f"Queue {queue.name} has {queue.depth} messages and no worker",
                f"{queue.depth} messages wait in {queue.name} (oldest "
                f"{int(queue.oldest_age_seconds or 0)} s) and no worker consuming it was seen "
                f"for {limit} s or more. Start or fix its worker pool.",
                {"queue": queue.name, "depth": queue.depth},
            )


def _periodic_tasks_late(now: datetime) -> Iterator[Alert]:
    for task in periodic_task_states(now=now):
        if task.late:
            yield Alert(
                "periodic_task_late",
                f"periodic_task:{task.id}",
                f"Periodic task {task.name!r} has not run for {int(task.seconds_since_last_run)} s",
                f"{task.task} should run every {int(task.interval_seconds)} s and last ran "
                f"{int(task.seconds_since_last_run)} s ago. Check that exactly one beat runs.",
                {"periodic_task": task.name, "task": task.task},
            )


def _dead_letters_piling(now: datetime) -> Iterator[Alert]:
    by_task = dead_letters_open_by_task()
    total = sum(by_task.values())
    if total >= settings.ALERT_DEAD_LETTERS_OPEN:
        worst = ", ".join(
            f"{name} ({n})" for name, n in sorted(by_task.items(), key=lambda i: -i[1])[:5]
        )
        yield Alert(
            "dead_letters_piling",
            "dead_letters",
            f"{total} dead letters wait for staff",
            f"{total} tasks failed for good and wait in the dead-letter queue: {worst}.",
            {"open": total},
        )


RULES = (
    _jobs_too_long,
    _jobs_with_failures,
    _jobs_slow,
    _queues_unserved,
    _periodic_tasks_late,
    _dead_letters_piling,
)


def alerts_evaluate(*, now: datetime | None = None) -> list[Alert]:
    """Every alert whose condition holds now (sending aside). Bounded reads: active jobs by
    the partial index, recent failed jobs, one Redis round trip per store for the queues, the
    beat schedule table, open dead letters."""
    now = now or timezone.now()
    return [alert for rule in RULES for alert in rule(now)]


# Claim the sending of an alert: granted when the last claim is ``repeat`` seconds old or
# there is none. The time is the caller's (the same clock as the conditions, and the one
# tests move), compared atomically, so two evaluations at once get one grant.
_CLAIM_LUA = """
local last = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
local repeat_s = tonumber(ARGV[2])
if last and now - last < repeat_s then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', repeat_s * 2)
return 1
"""


def alert_send(*, alert: Alert, now: datetime | None = None) -> bool:
    """Send one alert unless it went out in the last ``ALERT_REPEAT_SECONDS``; True if sent.

    The Redis claim makes concurrent evaluations send it once. If storing the notifications
    fails, the claim is given back so the next evaluation tries again.
    """
    now = now or timezone.now()
    claim = redis_script(settings.REDIS_URL, _CLAIM_LUA)
    key = f"alert:sent:{alert.rule}:{alert.subject}"
    if not claim(keys=[key], args=[now.timestamp(), settings.ALERT_REPEAT_SECONDS]):
        return False
    payload = {"rule": alert.rule, "subject": alert.subject, "title": alert.title, **alert.data}
    try:
        with transaction.atomic(durable=True):
            staff_notify(
                kind=Notification.Kind.PLATFORM_ALERT,
                title=alert.title,
                body=alert.detail,
                data=payload,
                dedup_key=f"alert:{alert.rule}:{alert.subject}:{int(now.timestamp())}",
            )
            staff_event_publish_on_commit(event=STAFF_EVENT, data=payload)
    except Exception:
        claim.registered_client.delete(key)
        raise
    logger.warning("alert %s %s: %s", alert.rule, alert.subject, alert.title, extra=alert.data)
    sentry_message_capture(
        message=alert.title,
        fingerprint=["ops-alert", alert.rule, alert.subject],
        tags={"alert_rule": alert.rule, "alert_subject": alert.subject, **alert.data},
    )
    ALERTS_SENT.inc(rule=alert.rule)
    return True


def ops_alerts_check(*, now: datetime | None = None) -> list[Alert]:
    """Evaluate every rule and send what is due; return the alerts sent this time."""
    now = now or timezone.now()
    return [alert for alert in alerts_evaluate(now=now) if alert_send(alert=alert, now=now)]
