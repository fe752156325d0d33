"""Benchmark of the Stripe rail's shared rate limit: real worker processes against a fake Stripe.

``stripe_rate_benchmark`` seeds a challenge, links every winner to a Stripe account, starts
``workers`` Celery worker processes on the payout queues, resolves on the Stripe rail and waits
for the job. The fake Stripe logs when each transfer request arrived; from that log come the
busiest one-second window (the token bucket allows at most ``rate + burst``) and the throughput
(the target is at least 90% of ``rate``). Run it through the embedded stack, for example::

    DJANGO_SETTINGS_MODULE=config.settings python -m deploy.devstack run -- python -c \
        "import django; django.setup(); from payouts.stripe_benchmarks import \
        stripe_rate_benchmark as b; b(winners=600)"

Measured on the 2-core machine (600 winners, 4 workers, 20/s, burst 5): 600 transfers in
29.7 s = 20.14/s (101% of the limit, the initial burst included), busiest window 25 = bound.
"""

import os
import time
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from django.test import override_settings

from payouts.models import PayoutJob


@dataclass(frozen=True, slots=True)
class StripeRateReport:
    winners: int
    workers: int
    rate: float
    burst: int
    requests: int
    seconds: float
    throughput: float
    busiest_window: int
    job_status: str

    @property
    def window_bound(self) -> float:
        return self.rate + self.burst

    @property
    def throughput_share(self) -> float:
        return self.throughput / self.rate


def busiest_window(times: list[float], width: float = 1.0) -> int:
    """The most requests that arrived within any ``width``-second window."""
    times = sorted(times)
    return max((bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def stripe_rate_benchmark(
    *,
    winners: int = 600,
    workers: int = 4,
    rate: float = 20.0,
    burst: int = 5,
    latency: float = 0.0,
    worker_env: dict[str, str] | None = None,
    app: str = "config",
    log_dir: Path | None = None,
    timeout: float = 900,
) -> StripeRateReport:
    """Pay ``winners`` Stripe transfers with ``workers`` processes under a ``rate``/s limit,
    each Stripe request taking ``latency`` seconds at the fake.

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
    from tests.fakes.stripe_server import FakeStripe

    fake = FakeStripe().start()
    fake.configure(latency=latency)
    limits = {
        "STRIPE_RATE_LIMIT": str(rate),
        "STRIPE_RATE_BURST": str(burst),
        "STRIPE_BATCH_SECONDS": "20",
        "CELERY_VISIBILITY_TIMEOUT": "600",
    }
    pool = WorkerPool(
        {**(worker_env or os.environ), **fake.env(), **limits}, app=app, log_dir=log_dir
    )
    try:
        challenge = challenge_seed(stakers=2 * winners, yes_share=0.5, seed=5)
        accounts = connected_accounts_seed(challenge_id=challenge.pk)
        fake.accounts_put([{"id": account, "payouts_enabled": True} for account in accounts])
        for n in range(workers):
            pool.start("payouts,payouts_stripe", name=f"stripe-bench{n}")
        workers_ready(workers)
        database_settle()
        # A full bucket to start from, as after any idle period.
        token_bucket_reset(bucket="stripe")
        with override_settings(
            STRIPE_API_KEY=fake.env()["STRIPE_API_KEY"], PAYOUT_PARALLELISM=workers
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
        times = sorted(fake.stats()["post_times"])
    finally:
        pool.stop_all()
        fake.stop()
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    report = StripeRateReport(
        winners=winners,
        workers=workers,
        rate=rate,
        burst=burst,
        requests=len(times),
        seconds=round(seconds, 3),
        throughput=round((len(times) - 1) / seconds, 2) if seconds else 0.0,
        busiest_window=busiest_window(times),
        job_status=job.status,
    )
    print(
        f"stripe rate limit: {report.requests} transfers by {workers} workers in "
        f"{report.seconds:.1f} s = {report.throughput:.2f}/s "
        f"({report.throughput_share:.0%} of the {rate:g}/s limit); busiest 1 s window "
        f"{report.busiest_window} requests (bound {report.window_bound:g}); job {job.status}"
    )
    return report
