"""Tasks that exist only to exercise the base task class in real worker processes.

They record what happened in Redis so the test process can watch from outside.
"""

import time

import redis
from django.conf import settings

from config.celery import app
from core.errors import TransientError


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@app.task(name="tests.always_transient")
def always_transient_task(key: str) -> None:
    _redis().rpush(f"attempts:{key}", time.time())
    raise TransientError("the outside world is down")


@app.task(name="tests.succeeds_on_replay")
def succeeds_on_replay_task(key: str) -> str:
    """Fails until a flag is set, as a task does until an outage is fixed."""
    client = _redis()
    client.rpush(f"attempts:{key}", time.time())
    if not client.exists(f"fixed:{key}"):
        raise TransientError("still broken")
    client.set(f"done:{key}", 1)
    return "ok"


@app.task(name="tests.slow", time_limit=120, soft_time_limit=110)
def slow_task(key: str, seconds: float) -> None:
    client = _redis()
    client.rpush(f"started:{key}", time.time())
    time.sleep(seconds)
    client.incr(f"done:{key}")
