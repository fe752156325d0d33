"""Reads of operational state shared by the metrics, the alerts and the staff dashboard."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.beat import Scheduler
from django.db.models import Count
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.models import DeadLetter


def dead_letters_open_by_task() -> dict[str, int]:
    """Open dead letters per task name (an index scan of the open ones only)."""
    rows = (
        DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
        .values("task_name")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["task_name"]: row["n"] for row in rows}


# Beat writes ``last_run_at`` back to the database only every ``sync_every`` seconds (three
# minutes), so the stored time lags the real last run by up to that much.
BEAT_WRITE_LAG_SECONDS = Scheduler.sync_every
# A periodic task is late once it missed this many of its runs (beyond the write lag).
LATE_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class PeriodicTaskState:
    id: int
    name: str
    task: str
    # Seconds since beat last sent it (since it was last changed, if it never ran).
    seconds_since_last_run: float
    # Seconds between two runs, as its schedule says.
    interval_seconds: float

    @property
    def late(self) -> bool:
        """Not sent for ``LATE_AFTER_INTERVALS`` intervals, beyond beat's write lag."""
        limit = LATE_AFTER_INTERVALS * self.interval_seconds + BEAT_WRITE_LAG_SECONDS
        return self.seconds_since_last_run > limit


def periodic_task_states(*, now: datetime | None = None) -> list[PeriodicTaskState]:
    """Every enabled recurring periodic task with how long ago it last ran and how often it
    should; one query over django-celery-beat's (small) schedule table."""
    now = now or timezone.now()
    states = []
    tasks = PeriodicTask.objects.filter(enabled=True, one_off=False).select_related(
        "interval", "crontab", "solar", "clocked"
    )
    for task in tasks.order_by("id"):
        if task.clocked_id:
            continue  # a one-time schedule has no interval to be late by
        last = task.last_run_at or task.date_changed
        schedule = task.schedule
        # The schedule's own arithmetic (interval, crontab or solar) on its own clock: the
        # next two runs due after the last one; the gap between them is the interval (for a
        # crontab the gap after an off-schedule last run would be shorter).
        first = schedule.now() + schedule.remaining_estimate(last)
        # On the whole second: a crontab run read as 03:29:59.99999 would be followed by
        # 03:30 the same day.
        first = (first + timedelta(microseconds=500_000)).replace(microsecond=0)
        second = schedule.now() + schedule.remaining_estimate(first)
        # Whole seconds: two readings of the clock differ by microseconds.
        interval = round((second - first).total_seconds())
        states.append(
            PeriodicTaskState(
                id=task.pk,
                name=task.name,
                task=task.task,
                seconds_since_last_run=max(0.0, (now - last).total_seconds()),
                interval_seconds=float(max(interval, 1)),
            )
        )
    return states
