"""The Celery app of chaos-run workers: the project's app, with every batch task published twice.

A duplicate message is what a broker redelivery or a re-sent task looks like to the engine, so
publishing each batch twice on purpose proves that a second copy of any batch pays nobody twice.
The copy carries a header so that it is not copied again, and each copy is counted in Redis for
the run's report.
"""

from functools import cache

import redis
from celery.signals import after_task_publish
from django.conf import settings

from config.celery import app

DUPLICATE_HEADER = "chaos_duplicate"
DUPLICATES_KEY = "chaos:duplicate_publishes"


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@after_task_publish.connect
def publish_batches_twice(sender=None, headers=None, body=None, **kwargs) -> None:
    # Imported here: this module loads before Django's app registry is ready.
    from payouts.services.engine import BATCH_TASKS

    if sender not in BATCH_TASKS.values() or (headers or {}).get(DUPLICATE_HEADER):
        return
    args, task_kwargs, _embed = body
    app.send_task(sender, args=args, kwargs=task_kwargs, headers={DUPLICATE_HEADER: True})
    _redis().incr(DUPLICATES_KEY)


__all__ = ["app"]
