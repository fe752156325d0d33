"""Benchmark of the Stripe rail's shared rate limit: real worker processes against a fake Stripe.

``stripe_rate_benchmark`` seeds a challenge, links every winner to a Stripe account, starts
``workers`` Celery worker processes on the payout queues -- Celery's ``threads`` pool with
``threads`` threads each, as the Stripe worker runs in production (``deploy/processes.py``) --
resolves on the Stripe rail with one batch per thread and waits for the job. The fake Stripe,
in a process of its own, logs when each transfer request arrived at its host (the kernel's
receive time of the request's first bytes, as Stripe counts at its edge, not when a thread
of the fake got to it); from that log come the busiest one-second window of
arrivals (each request is recorded in the limiter's log of sends just before it is sent, and
no window of that log holds more than ``rate``) and the throughput against ``rate``.
``manage.py bench`` runs it with two threaded processes and, as the baseline in the same run,
with the former layout (single-task ``solo`` processes); ``--repeat`` gives each figure's
median, min and max. Run it alone through the embedded stack::

    DJANGO_SETTINGS_MODULE=config.settings python -m deploy.devstack run -- python -c \
        "import django; django.setup(); from proof.stripe_bench import \
        stripe_rate_benchmark as b; print(b(winners=2000, workers=2, threads=8, rate=100, \
        latency=0.03))"
"""

import os
import time
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.test import override_settings

from payouts.models import PayoutJob
from proof.cpu import tree_cpu


@dataclass(frozen=True, slots=True)
class StripeRateReport:
    winners: int
    workers: int
    pool: str
    threads: int
    rate: float
    burst: int
    requests: int
    seconds: float
    throughput: float
    busiest_window: int
    # Seconds after the first request at which the busiest window starts.
    busiest_window_at: float
    job_status: str
    # CPU time of the worker processes over the whole job, per transfer request.
    worker_cpu_ms_per_request: float

    @property
    def window_bound(self) -> float:
        """The most requests any one-second window of arrivals may hold: ``rate``. The
        limiter's log of sends holds at most ``rate`` in any ``1 + SEND_JITTER`` seconds, which
        leaves that much spread for the delays between a request's entry in the log and its
        arrival (``payouts.services.ratelimit``)."""
        return self.rate

    @property
    def throughput_share(self) -> float:
        return self.throughput / self.rate


def busiest_window(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """The most requests that arrived within any ``width``-second window, and when that
    window starts (seconds after the first request)."""
    times = sorted(times)
    counts = [(bisect_left(times, t + width) - i, t - times[0]) for i, t in enumerate(times)]
    return max(counts, key=lambda c: c[0], default=(0, 0.0))


def _cpu_seconds(procs) -> float:
    """User + system CPU of these processes and their children so far (dead ones count 0)."""
    return sum(sum(tree_cpu(proc.pid).values()) for proc in procs)


def stripe_rate_benchmark(
    *,
    winners: int = 600,
    workers: int = 1,
    threads: int | None = None,
    pool: str = "threads",
    rate: float = 20.0,
    burst: int | None = None,
    latency: float = 0.0,
    worker_env: dict[str, str] | None = None,
    app: str = "config",
    log_dir: Path | None = None,
    timeout: float = 900,
) -> StripeRateReport:
    """Pay ``winners`` Stripe transfers with ``workers`` processes of ``threads`` threads
    (by default ``STRIPE_WORKER_CONCURRENCY`` in all, shared out between the processes;
    ``pool="solo"``: one task per process, ``threads`` ignored) under a ``rate``/s limit,
    each Stripe request taking ``latency`` seconds at the fake, with a bucket of ``burst``
    (``STRIPE_RATE_BURST`` by default, as production runs). The job runs one batch per thread
    (``STRIPE_PARALLELISM``).

    ``worker_env`` is the workers' environment (the database and Redis they share with this
    process; this process's environment by default); their output goes to ``log_dir`` when
    given. Prints and returns the figures.
    """
    from deploy.workers import WorkerPool
    from payouts.services.connected_accounts import connected_accounts_seed
    from payouts.services.jobs import challenge_resolve
    from payouts.services.ratelimit import token_bucket_reset
    from proof.payout_bench import database_settle, workers_ready
    from proof.seeding import challenge_seed
    from tests.fakes.stripe_server import FakeStripeProcess

    if burst is None:
        burst = settings.STRIPE_RATE_BURST
    if pool == "solo":
        threads = 1
    elif threads is None:
        threads = max(1, settings.STRIPE_WORKER_CONCURRENCY // workers)
    fake = FakeStripeProcess().start()
    fake.configure(latency=latency)
    limits = {
        "STRIPE_RATE_LIMIT": str(rate),
        "STRIPE_RATE_BURST": str(burst),
        "STRIPE_BATCH_SECONDS": "20",
        "CELERY_VISIBILITY_TIMEOUT": "600",
    }
    procs = WorkerPool(
        {**(worker_env or os.environ), **fake.env(), **limits}, app=app, log_dir=log_dir
    )
    try:
        challenge = challenge_seed(stakers=2 * winners, yes_share=0.5, seed=5)
        accounts = connected_accounts_seed(challenge_id=challenge.pk)
        fake.accounts_put([{"id": account, "payouts_enabled": True} for account in accounts])
        for n in range(workers):
            procs.start(
                "payouts,payouts_stripe", name=f"stripe-bench{n}", pool=pool, concurrency=threads
            )
        workers_ready(workers)
        database_settle()
        # A full bucket to start from, as after any idle period.
        token_bucket_reset(bucket="stripe")
        cpu_before = _cpu_seconds(procs.procs)
        with override_settings(
            STRIPE_API_KEY=fake.env()["STRIPE_API_KEY"], STRIPE_PARALLELISM=workers * threads
        ):
            job = challenge_resolve(
                challenge_id=challenge.pk, result="challenger_won", actor=None, rail="stripe"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status not in PayoutJob.ACTIVE_STATUSES:
                break
            time.sleep(0.5)
        cpu = _cpu_seconds(procs.procs) - cpu_before
        times = sorted(fake.stats()["post_times"])
    finally:
        procs.stop_all()
        fake.stop()
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    busiest, busiest_at = busiest_window(times)
    report = StripeRateReport(
        winners=winners,
        workers=workers,
        pool=pool,
        threads=threads,
        rate=rate,
        burst=burst,
        requests=len(times),
        seconds=round(seconds, 3),
        throughput=round((len(times) - 1) / seconds, 2) if seconds else 0.0,
        busiest_window=busiest,
        busiest_window_at=round(busiest_at, 3),
        job_status=job.status,
        worker_cpu_ms_per_request=round(cpu * 1000 / len(times), 2) if times else 0.0,
    )
    print(
        f"stripe rate limit: {report.requests} transfers by {workers} {pool} worker(s) x "
        f"{threads} in {report.seconds:.1f} s = {report.throughput:.2f}/s "
        f"({report.throughput_share:.0%} of the {rate:g}/s limit); busiest 1 s window "
        f"{report.busiest_window} requests at +{report.busiest_window_at:.2f} s (bound "
        f"{report.window_bound:g}); worker CPU "
        f"{report.worker_cpu_ms_per_request:.1f} ms per request; job {job.status}"
    )
    return report
