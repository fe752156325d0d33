"""Broker and worker state without a broadcast: queue depth, oldest message age, workers.

Asking workers (``celery inspect``) waits for every worker to answer or for a timeout, which
is too slow for a scrape or a dashboard and falls over exactly when workers are busy. Instead:

- every message gets a ``published_at`` header when it is sent (``before_task_publish``), so
  the oldest message of a queue tells its own age: kombu's Redis transport pushes on the left
  and pops on the right, so the oldest is the last element (one ``LINDEX``) of each of the
  queue's lists (one per priority step: the plain name holds priority 0, ``<name><sep><step>``
  the others);
- every worker process writes a heartbeat for each queue it consumes into a Redis sorted set
  every ``WORKER_HEARTBEAT_SECONDS`` from a thread of its own (so a long task in a solo pool
  does not silence it), and removes it when it stops; a worker counts while its heartbeat is
  younger than ``WORKER_STALE_SECONDS``.

``send_task`` is how the apps send a task by name (its result ignored). ``queue_states()`` is
the selector the metrics, the alerts and the staff dashboard share. It reads Redis only (the
broker must be Redis, as configured), in one pipelined round trip.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from celery import current_app
from celery.signals import before_task_publish, worker_ready, worker_shutdown
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS, Channel

from core.requestid import TASK_HEADER, request_id_get

logger = logging.getLogger(__name__)

PUBLISHED_HEADER = "published_at"
WORKER_HEARTBEAT_SECONDS = 10.0
WORKER_STALE_SECONDS = 35.0
_WORKERS_KEY = "workers:queue:{queue}"


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _broker() -> redis.Redis:
    return _redis(settings.CELERY_BROKER_URL)


def send_task(name: str, **options: Any) -> None:
    """Send the task ``name`` by name (Celery's ``send_task``), its result ignored.

    ``CELERY_TASK_IGNORE_RESULT`` reaches a registered task's ``apply_async`` only. A message
    sent by name from outside a task made the Redis result backend subscribe the sending
    process to the result's channel, and unsubscribe once the result object was dropped: two
    Redis commands more per message and a pub/sub connection in every web process, for results
    nothing reads (Postgres holds every outcome). A resolve sent its expansion so.
    """
    current_app.send_task(name, ignore_result=True, **options)


@before_task_publish.connect(dispatch_uid="core.queues.stamp")
def _stamp(headers=None, **kwargs) -> None:
    """Stamp each message with its publish time and the request id it was sent under."""
    if headers is None:
        return
    headers.setdefault(PUBLISHED_HEADER, time.time())
    request_id = request_id_get()
    if request_id:
        headers.setdefault(TASK_HEADER, request_id)


def known_queues() -> list[str]:
    """Every queue the routes (and the default queue) name, sorted."""
    queues = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted(queues | {settings.CELERY_TASK_DEFAULT_QUEUE})


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    depth: int
    # Seconds since the oldest waiting message was published; None when the queue is empty
    # or its oldest message carries no publish time.
    oldest_age_seconds: float | None
    workers: int
    # Seconds since any worker consuming the queue last sent a heartbeat; None if none ever.
    last_worker_seen_seconds: float | None


def _published_at(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        value = json.loads(raw).get("headers", {}).get(PUBLISHED_HEADER)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def queue_lists(name: str) -> list[str]:
    """The Redis lists of one queue, one per priority step (the payouts queue uses two)."""
    return [name if step == 0 else f"{name}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def queue_states(*, queues: list[str] | None = None) -> list[QueueState]:
    """Depth, oldest message's age and live workers of each queue; raises ``redis.RedisError``
    when the broker cannot be read (callers report the broker as down)."""
    names = queues if queues is not None else known_queues()
    now = time.time()
    broker = _broker()
    pipe = broker.pipeline(transaction=False)
    for name in names:
        for key in queue_lists(name):
            pipe.llen(key)
            pipe.lindex(key, -1)
    answers = iter(pipe.execute())
    depths: list[int] = []
    first_published: list[float | None] = []
    for name in names:
        lists = [(int(next(answers)), next(answers)) for _ in queue_lists(name)]
        depths.append(sum(depth for depth, _ in lists))
        stamps = [_published_at(last) for depth, last in lists if depth]
        first_published.append(min((t for t in stamps if t is not None), default=None))
    pipe = _redis(settings.REDIS_URL).pipeline(transaction=False)
    for name in names:
        key = _WORKERS_KEY.format(queue=name)
        pipe.zcount(key, now - WORKER_STALE_SECONDS, "+inf")
        pipe.zrevrange(key, 0, 0, withscores=True)
    worker_answers = pipe.execute()
    states = []
    for index, name in enumerate(names):
        workers, latest = worker_answers[2 * index], worker_answers[2 * index + 1]
        published = first_published[index]
        states.append(
            QueueState(
                name=name,
                depth=depths[index],
                oldest_age_seconds=max(0.0, now - published) if published else None,
                workers=int(workers),
                last_worker_seen_seconds=max(0.0, now - latest[0][1]) if latest else None,
            )
        )
    return states


def broker_state() -> dict:
    """For dashboards: ``{"up": bool, "queues": [QueueState as dict, ...]}``, never raising."""
    try:
        states = queue_states()
    except redis.RedisError as exc:
        logger.warning("broker state unavailable: %r", exc)
        return {"up": False, "queues": []}
    return {
        "up": True,
        "queues": [
            {
                "name": s.name,
                "depth": s.depth,
                "oldest_age_seconds": s.oldest_age_seconds,
                "workers": s.workers,
                "last_worker_seen_seconds": s.last_worker_seen_seconds,
            }
            for s in states
        ],
    }


class _Heartbeat(threading.Thread):
    """Writes this worker's heartbeat for each queue it consumes until stopped."""

    def __init__(self, consumer) -> None:
        super().__init__(name="queue-heartbeat", daemon=True)
        self.consumer = consumer
        self.hostname = consumer.hostname
        self.stopped = threading.Event()
        self.queues: set[str] = set()

    def _consumed(self) -> set[str]:
        task_consumer = getattr(self.consumer, "task_consumer", None)
        return {q.name for q in getattr(task_consumer, "queues", None) or ()}

    def beat(self) -> None:
        client = _redis(settings.REDIS_URL)
        queues = self._consumed() or self.queues
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for name in queues:
            key = _WORKERS_KEY.format(queue=name)
            pipe.zadd(key, {self.hostname: now})
            # Workers that died without saying goodbye drop out after an hour.
            pipe.zremrangebyscore(key, "-inf", now - 3600)
        for name in self.queues - queues:  # a queue this worker stopped consuming
            pipe.zrem(_WORKERS_KEY.format(queue=name), self.hostname)
        pipe.execute()
        self.queues = queues

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:
                logger.warning("worker heartbeat not written: %r", exc)
            self.stopped.wait(WORKER_HEARTBEAT_SECONDS)

    def stop(self) -> None:
        self.stopped.set()
        try:
            pipe = _redis(settings.REDIS_URL).pipeline(transaction=False)
            for name in self.queues:
                pipe.zrem(_WORKERS_KEY.format(queue=name), self.hostname)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("worker heartbeat not removed: %r", exc)


_heartbeat: _Heartbeat | None = None


@worker_ready.connect(dispatch_uid="core.queues.heartbeat_start")
def _heartbeat_start(sender=None, **kwargs) -> None:
    global _heartbeat
    if sender is None or _heartbeat is not None:
        return
    _heartbeat = _Heartbeat(sender)
    _heartbeat.start()


@worker_shutdown.connect(dispatch_uid="core.queues.heartbeat_stop")
def _heartbeat_stop(**kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
