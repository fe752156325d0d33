"""The Celery app of chaos-run workers and of its beat: the project's app, with every batch and
slice task published twice, a beat schedule fast enough for a run of a minute, and sweeps that
say when they run.

A duplicate message is what a broker redelivery or a re-sent task looks like to the engine, so
publishing each batch and each ledger slice twice on purpose proves that a second copy of any of
them pays nobody twice.
The copy carries a header so that it is not copied again, and each copy is counted in Redis for
the run's report.

Beat (``celery -A proof.chaos_app beat``, with the file scheduler: the run leaves the database's
schedule alone) sends the watchdog every ``SWEEP_PERIOD`` seconds instead of every minute, with
a short ``stale_seconds``. While a watchdog sweep runs, its task id and worker pid sit in the
Redis hash ``SWEEPING``, so the run can SIGKILL beat and that worker in the middle of a sweep
and prove it did (the entry outlives the killed sweep); finished sweeps are counted in
``SWEEPS_DONE``.
"""

import os
from functools import cache

import redis
from celery.signals import after_task_publish, task_postrun, task_prerun
from django.conf import settings

from config.celery import app

DUPLICATE_HEADER = "chaos_duplicate"
DUPLICATES_KEY = "chaos:duplicate_publishes"
SWEEPING = "chaos:sweeping"
SWEEPS_DONE = "chaos:sweeps_done"
WATCHDOG_TASK = "payouts.tasks.payout_watchdog_task"
SWEEP_PERIOD = 2.0
SWEEP_STALE_SECONDS = 5

app.conf.beat_schedule = {
    "chaos watchdog": {
        "task": WATCHDOG_TASK,
        "schedule": SWEEP_PERIOD,
        "kwargs": {"stale_seconds": SWEEP_STALE_SECONDS},
        "options": {"expires": 10 * SWEEP_PERIOD},
    }
}


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@after_task_publish.connect
def publish_payments_twice(sender=None, headers=None, body=None, **kwargs) -> None:
    # Imported here: this module loads before Django's app registry is ready.
    from payouts.services.engine import BATCH_TASKS, SLICE_TASK

    duplicated = {*BATCH_TASKS.values(), SLICE_TASK}
    if os.environ.get("CHAOS_NO_DUPLICATES") or sender not in duplicated:
        return
    if (headers or {}).get(DUPLICATE_HEADER):
        return
    args, task_kwargs, _embed = body
    app.send_task(sender, args=args, kwargs=task_kwargs, headers={DUPLICATE_HEADER: True})
    _redis().incr(DUPLICATES_KEY)


@task_prerun.connect
def sweep_started(task_id=None, task=None, **kwargs) -> None:
    if task is not None and task.name == WATCHDOG_TASK:
        _redis().hset(SWEEPING, task_id, os.getpid())


@task_postrun.connect
def sweep_ended(task_id=None, task=None, **kwargs) -> None:
    if task is not None and task.name == WATCHDOG_TASK:
        _redis().hdel(SWEEPING, task_id)
        _redis().incr(SWEEPS_DONE)


__all__ = ["app"]
