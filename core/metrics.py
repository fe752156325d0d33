"""Prometheus metrics: the ``/metrics`` endpoint and counters shared by every process.

Three kinds of metrics end up in one scrape of a web process:

- **HTTP metrics** from django-prometheus (its middlewares): requests, responses by status,
  latency by view. They live in the web process's memory; with several gunicorn workers per
  host set ``PROMETHEUS_MULTIPROC_DIR`` (an empty folder per host, wiped at start) and the
  scrape adds up every worker's files (prometheus_client's multiprocess mode).
- **Shared counters** (``SharedCounter``, ``SharedHistogram``): events that happen in Celery
  workers -- tasks finished, Stripe calls, dead letters, payouts, alerts, retention -- on other
  machines than the web process that is scraped. prometheus_client's multiprocess mode needs
  a folder shared by every process, which workers on other hosts do not have, so these are
  kept in Redis hashes (``HINCRBYFLOAT``, one pipelined round trip per event) and read by the
  scrape. They survive worker restarts; they reset only if Redis loses its data, which
  Prometheus treats as any counter reset.
- **State read at scrape time** (collectors registered with ``scrape_collector_register``):
  queue depths and workers, jobs, dead letters, periodic tasks. Each runs a few bounded
  queries per scrape (STYLE.md, "Metrics").

The endpoint is closed: ``METRICS_TOKEN`` unset means no endpoint (404), a request without
``Authorization: Bearer <token>`` gets 401, a wrong token 403.
"""

import hmac
import json
import logging
import os
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import cache

import redis
from celery.signals import task_postrun
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

PREFIX = "stakehold"
_KEY = "metrics:{name}"


@cache
def _redis(url: str) -> redis.Redis:
    # Short timeouts: a metric must never hold up a task or a scrape for long.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def metrics_redis() -> redis.Redis:
    return _redis(settings.REDIS_URL)


_SHARED: dict[str, "SharedCounter | SharedHistogram"] = {}


class SharedCounter:
    """A counter every process adds to, kept in Redis (see the module docstring).

    Declare it at module level in the module that counts; the app's ``ready()`` imports that
    module, so every process (and the scrape) knows every metric. Adding is best effort: a
    Redis error is logged and the event goes uncounted rather than failing the work.
    """

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        self.name = f"{PREFIX}_{name}"
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        _SHARED[self.name] = self

    def _field(self, labels: dict[str, object], suffix: str = "") -> str:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        values = [str(labels[name]) for name in self.labelnames]
        return json.dumps([*values, suffix] if suffix else values)

    def _add(self, increments: dict[str, int | float]) -> None:
        try:
            pipe = metrics_redis().pipeline(transaction=False)
            key = _KEY.format(name=self.name)
            for field, amount in increments.items():
                # Whole numbers (counts, money in minor units) add up exactly, past the 2**53
                # where a float stops counting every unit; durations add as floats.
                if isinstance(amount, int):
                    pipe.hincrby(key, field, amount)
                else:
                    pipe.hincrbyfloat(key, field, amount)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("metric %s not counted: %r", self.name, exc)

    def inc(self, amount: float = 1, **labels: object) -> None:
        if amount:
            # SQL sums arrive as Decimal, which Redis clients do not encode; a whole one (an
            # amount of money) stays a whole number.
            whole = isinstance(amount, int | Decimal) and amount == int(amount)
            self._add({self._field(labels): int(amount) if whole else float(amount)})

    def _stored(self, raw: dict[bytes, bytes]) -> Iterator[tuple[list[str], float]]:
        for field, value in raw.items():
            yield json.loads(field), float(value)

    def collect(self, raw: dict[bytes, bytes]) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self._stored(raw)):
            family.add_metric(labels, value)
        return family


class SharedHistogram(SharedCounter):
    """A histogram every process observes into, kept in Redis like ``SharedCounter``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        buckets: Iterable[float],
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.buckets = tuple(sorted(buckets))

    def observe(self, value: float, **labels: object) -> None:
        # One field per bucket that the value falls into (its own, not cumulative: the scrape
        # adds them up), plus the sum; the count is the +Inf bucket.
        bucket = next((b for b in self.buckets if value <= b), float("inf"))
        self._add({self._field(labels, repr(bucket)): 1, self._field(labels, "sum"): float(value)})

    def collect(self, raw: dict[bytes, bytes]) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        series: dict[tuple[str, ...], dict[str, float]] = {}
        for stored, value in self._stored(raw):
            *label_values, part = stored
            series.setdefault(tuple(label_values), {})[part] = value
        for labels, parts in sorted(series.items()):
            running = 0.0
            buckets = []
            for bound in (*self.buckets, float("inf")):
                running += parts.get(repr(bound), 0.0)
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(list(labels), buckets, parts.get("sum", 0.0))
        return family


class SharedMetricsCollector(Collector):
    """Reads every declared shared metric from Redis in one pipelined round trip."""

    def collect(self) -> Iterator[Metric]:
        metrics = list(_SHARED.values())
        pipe = metrics_redis().pipeline(transaction=False)
        for metric in metrics:
            pipe.hgetall(_KEY.format(name=metric.name))
        try:
            stored = pipe.execute()
        except redis.RedisError as exc:
            logger.warning("shared metrics unavailable: %r", exc)
            return
        for metric, raw in zip(metrics, stored, strict=True):
            yield metric.collect(raw)


_SCRAPE_COLLECTORS: list[Collector] = []


def scrape_collector_register(collector: Collector) -> None:
    """Add a collector to what ``/metrics`` serves (call it from an app's ``ready()``)."""
    if all(type(known) is not type(collector) for known in _SCRAPE_COLLECTORS):
        _SCRAPE_COLLECTORS.append(collector)


class _ProcessCollector(Collector):
    """What this process's own prometheus_client registry holds (the HTTP metrics), or, in
    multiprocess mode, what every web worker process of this host wrote."""

    def collect(self) -> Iterator[Metric]:
        multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if multiproc_dir:
            yield from MultiProcessCollector(None, path=multiproc_dir).collect()
        else:
            yield from REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """A registry with everything one scrape serves."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessCollector())
    for collector in _SCRAPE_COLLECTORS:
        registry.register(collector)
    return registry


def _error(status: int, code: str, detail: str) -> JsonResponse:
    response = JsonResponse({"code": code, "detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: the Prometheus text format, for a scraper holding ``METRICS_TOKEN``."""
    token = settings.METRICS_TOKEN
    if not token:
        # No token configured: the endpoint does not exist, so it can never be open by mistake.
        return _error(404, "not_found", "Not found.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return _error(401, "not_authenticated", "A bearer token is required.")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _error(403, "permission_denied", "This token may not read metrics.")
    # The text format, or OpenMetrics when the scraper asks for it (Prometheus does).
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(metrics_registry()), content_type=content_type)


# --- Tasks ----------------------------------------------------------------------------------

TASKS = SharedCounter(
    "tasks",
    "Celery tasks that finished a run, by task name and state "
    "(success, retry: a transient error, failure: no retry left or a permanent error).",
    ["task", "state"],
)
DEAD_LETTERS = SharedCounter(
    "dead_letters_recorded",
    "Dead letters recorded, by task name (a task's final failure or a failed payout entry).",
    ["task"],
)


@task_postrun.connect(dispatch_uid="core.metrics.task_postrun")
def _task_finished(sender=None, task=None, state=None, **kwargs) -> None:
    if task is not None and state:
        TASKS.inc(task=task.name, state=str(state).lower())


# --- State read at scrape time --------------------------------------------------------------


class OperationsCollector(Collector):
    """Broker, queues, workers, open dead letters and periodic tasks: a pipelined Redis round
    trip and two small queries (open dead letters by index, the beat schedule table)."""

    def collect(self) -> Iterator[Metric]:
        from core.queues import queue_states
        from core.selectors import dead_letters_open_by_task, periodic_task_states

        broker_up = GaugeMetricFamily(
            f"{PREFIX}_broker_up", "1 when the broker (Redis) answered this scrape."
        )
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_messages", "Messages waiting in each queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_message_age_seconds",
            "Age of the oldest waiting message of each queue (0 when empty).",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            f"{PREFIX}_queue_workers",
            "Worker processes consuming each queue (heartbeat in the last 35 s).",
            labels=["queue"],
        )
        try:
            states = queue_states()
        except redis.RedisError as exc:
            logger.warning("queue metrics unavailable: %r", exc)
            states = None
        broker_up.add_metric([], 0 if states is None else 1)
        for state in states or ():
            depth.add_metric([state.name], state.depth)
            age.add_metric([state.name], state.oldest_age_seconds or 0.0)
            workers.add_metric([state.name], state.workers)
        yield from (broker_up, depth, age, workers)

        open_letters = GaugeMetricFamily(
            f"{PREFIX}_dead_letters_open",
            "Dead letters waiting for staff (not replayed), by task name.",
            labels=["task"],
        )
        for task_name, count in sorted(dead_letters_open_by_task().items()):
            open_letters.add_metric([task_name], count)
        yield open_letters

        since = GaugeMetricFamily(
            f"{PREFIX}_periodic_task_seconds_since_last_run",
            "Seconds since beat last sent each enabled periodic task.",
            labels=["name", "task"],
        )
        interval = GaugeMetricFamily(
            f"{PREFIX}_periodic_task_interval_seconds",
            "Seconds between two runs of each enabled periodic task, as scheduled.",
            labels=["name", "task"],
        )
        for periodic in periodic_task_states():
            labels = [periodic.name, periodic.task]
            since.add_metric(labels, periodic.seconds_since_last_run)
            interval.add_metric(labels, periodic.interval_seconds)
        yield from (since, interval)
