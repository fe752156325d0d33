"""Resolve latency under load: staff resolve the next challenge while the last one pays.

``resolve_load_seed`` seeds a challenge of ``stakers`` stakers (resolved again and again by
``proof.resolve_latency``, which undoes each resolve) and a challenge of ``paying_winners``
winners; ``resolve_under_load`` then measures in one run:

1. ``idle``: resolve p50/p99 with no worker running (the figure ``manage.py bench`` reports);
2. ``loaded``: the same samples while ``worker_processes`` payout workers (the bench's own:
   ``payouts`` queue, solo pool) pay the other challenge's job, started once its first
   winners are paid; ``load_held`` says whether that job was still paying when the last
   sample was taken, and ``paid_during_samples_per_s`` how fast it paid meanwhile.

The samples' expansion messages are parked on a queue of their own (``PARKED_QUEUE``, purged
afterwards): published exactly as a real resolve publishes them, but never run by the
workers paying, since each sample's job is undone a moment later. Per-statement timings
(``resolve_latency``'s ``statements``) show which of the resolve's queries waits under load.

Seeding is split from measuring, so the bench can seed once and copy the database. Full size
(the issue's figure)::

    seeded = resolve_load_seed(stakers=1_000_000, paying_winners=1_000_000)
    resolve_under_load(seeded=seeded, samples=100, staff=proof_staff("bench-staff"))

It runs at any size, e.g. 100,000 and 100,000 on a shared machine.
"""

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery.app.routes import MapRoute
from django.conf import settings

from challenges.models import Challenge
from config.celery import app
from payouts.models import PayoutJob
from payouts.services.engine import EXPAND_TASK
from proof.payout_bench import LOSER_RATIO, database_settle, workers_ready
from proof.resolve_latency import resolve_latency
from proof.seeding import challenge_seed

PARKED_QUEUE = "resolve_bench_parked"
P99_LIMIT_MS = 20.0


@contextlib.contextmanager
def expansions_parked() -> Iterator[None]:
    """Route the expansion task to ``PARKED_QUEUE`` (no worker consumes it) meanwhile."""
    routes = app.amqp.router.routes
    route = MapRoute({EXPAND_TASK: {"queue": PARKED_QUEUE}})
    routes.insert(0, route)
    try:
        yield
    finally:
        routes.remove(route)


def _wait_paying(job: PayoutJob, *, paid_at_least: int, timeout: float) -> None:
    """Until the job is in its paying phase: a job's start (a small first batch, then the
    expansion of every entry) is not the load of a job paying, so the clock waits for full
    batches to have been paid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.completed_count >= paid_at_least or job.status not in PayoutJob.ACTIVE_STATUSES:
            return
        time.sleep(0.05)
    raise TimeoutError(f"payout job {job.pk} paid nobody within {timeout} s")


def resolve_load_seed(*, stakers: int = 1_000_000, paying_winners: int = 1_000_000) -> dict:
    """The benchmark's data, settled: the challenge resolved again and again (``stakers``
    stakers) and the challenge paid meanwhile (``paying_winners`` winners and a tenth as many
    losers). Returns their ids."""
    resolved = challenge_seed(stakers=stakers, seed=200)
    paying = challenge_seed(
        stakers=paying_winners + paying_winners // LOSER_RATIO,
        yes_share=LOSER_RATIO / (LOSER_RATIO + 1),
        seed=201,
    )
    database_settle()
    return {"resolved": resolved.pk, "paying": paying.pk}


def resolve_under_load(
    *,
    seeded: dict,
    samples: int = 100,
    staff: Any,
    worker_processes: int = 2,
    worker_env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    timeout: float = 1_800,
    log=print,
) -> dict[str, Any]:
    """Resolve p50/p99 of ``seeded["resolved"]`` (``resolve_load_seed``) idle, then while the
    job of ``seeded["paying"]`` pays, in the same run."""
    from deploy.workers import WorkerPool
    from payouts.services.jobs import challenge_resolve

    resolved_id = seeded["resolved"]
    stakers = sum(Challenge.objects.values_list("yes_count", "no_count").get(pk=resolved_id))
    with expansions_parked():
        idle = resolve_latency(challenge_id=resolved_id, staff=staff, samples=samples)
    log(f"  idle: p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms")
    pool = WorkerPool(worker_env or dict(os.environ), log_dir=log_dir)
    try:
        for n in range(worker_processes):
            pool.start("payouts", name=f"resolve-load{n}")
        workers_ready(worker_processes)
        job = challenge_resolve(challenge_id=seeded["paying"], result="challenger_won", actor=None)
        winners = Challenge.objects.values_list("yes_count", flat=True).get(pk=seeded["paying"])
        _wait_paying(
            job, paid_at_least=min(2 * settings.PAYOUT_BATCH_SIZE, winners // 4), timeout=timeout
        )
        paid_before, started = job.completed_count, time.perf_counter()
        with expansions_parked():
            loaded = resolve_latency(challenge_id=resolved_id, staff=staff, samples=samples)
        seconds = time.perf_counter() - started
        job.refresh_from_db()
        load_held = job.status == PayoutJob.Status.RUNNING and job.completed_count < (
            job.total_entries
        )
        paid_during = job.completed_count - paid_before
    finally:
        pool.stop_all()
    log(
        f"  while {job.total_entries:,} winners are paid: p50 {loaded['p50_ms']} ms, p99 "
        f"{loaded['p99_ms']} ms (load held: {load_held})"
    )
    return {
        "stakers": stakers,
        "paying_winners": job.total_entries,
        "worker_processes": worker_processes,
        "cpus": os.cpu_count(),
        "p99_limit_ms": P99_LIMIT_MS,
        "idle": idle,
        "loaded": {
            **loaded,
            "load_held": load_held,
            "paid_during_samples_per_s": round(paid_during / seconds) if seconds else 0,
        },
        "loaded_over_idle_p99": round(loaded["p99_ms"] / idle["p99_ms"], 2)
        if idle["p99_ms"]
        else None,
    }
