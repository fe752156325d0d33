"""Tasks that exist only to exercise the base task class in real worker processes.

They record what happened in Redis so the test process can watch from outside.
"""

import logging
import time

import redis
from django.conf import settings

from config.celery import app
from core.errors import TransientError

logger = logging.getLogger(__name__)


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


@app.task(name="tests.fails_with_secrets")
def fails_with_secrets_task(job_id: int, api_key: str, card_number: str) -> None:
    """Fails for good with secrets in its arguments, a log breadcrumb and its message: what
    reaches Sentry must carry its tags and none of them."""
    logger.warning("charging a card", extra={"card_number": card_number})
    raise ValueError(f"Stripe refused key {api_key} for job {job_id}")


@app.task(name="tests.logs_its_context")
def logs_its_context_task(job_id: int, key: str) -> None:
    logger.info("working on job %s", job_id)
    _redis().set(f"done:{key}", 1)


@app.task(name="tests.cron_probe")
def cron_probe_task(key: str) -> None:
    _redis().incr(f"cron:{key}")
