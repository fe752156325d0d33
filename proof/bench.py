"""``manage.py bench``: every performance figure of the product, measured in one run.

Each figure is printed next to a baseline measured in the same run on the same machine, never
against a number remembered from elsewhere:

- resolve latency p50 / p99 through the staff API, for challenges of 10, 10,000 and 1,000,000
  stakers (``proof.resolve_latency``);
- the ledger rail end to end through real Celery worker processes for 1,000,000 winners
  (``payouts.benchmarks.payout_benchmark``), with the workers' peak RSS and the rows and WAL
  bytes PostgreSQL wrote from resolve to completion;
- the two baselines on a sample (``proof.baselines``): one transaction per payout in batches of
  500, and one Celery task per payout;
- the Stripe rail against the fake Stripe with latency and a rate limit
  (``payouts.stripe_benchmarks``);
- the deadline sweep and the warning fan-out (``challenges.benchmarks``).
"""

import os
import threading
from dataclasses import asdict
from typing import Any

import psutil

from deploy.workers import WorkerPool, run_log_dir
from payouts.services.engine import payout_job_expand
from payouts.services.jobs import challenge_resolve, payout_job_pause
from proof.baselines import per_transaction_run, task_per_payout_run
from proof.lifecycle_bench import bench_sweep, bench_warnings
from proof.payout_bench import database_settle, payout_benchmark, workers_ready
from proof.resolve_latency import resolve_latency
from proof.seeding import challenge_seed
from proof.staff import proof_staff
from proof.stripe_bench import stripe_rate_benchmark

BENCH_APP = "proof.bench_app"


class RssSampler:
    """Peak resident memory of any one worker (its process tree), sampled every 100 ms."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for proc in self.pool.alive():
                try:
                    tree = psutil.Process(proc.pid)
                    rss = tree.memory_info().rss + sum(
                        child.memory_info().rss for child in tree.children(recursive=True)
                    )
                except psutil.Error:
                    continue
                self.peak_bytes = max(self.peak_bytes, rss)


def _resolved_sample(*, stakers: int, seed: int) -> int:
    """A challenge whose job is expanded but not paid: the baselines' work to do."""
    challenge = challenge_seed(stakers=stakers, yes_share=0.9, seed=seed)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=None)
    payout_job_expand(job_id=job.pk)
    # Expansion sends the engine's own batches; paused, the job is left to the baseline.
    payout_job_pause(job_id=job.pk, actor=None)
    return job.pk


def bench_run(
    *,
    winners: int = 1_000_000,
    workers: int = 2,
    baseline_sample: int = 20_000,
    resolve_sizes: tuple[int, ...] = (10, 10_000, 1_000_000),
    resolve_samples: int = 100,
    stripe_winners: int = 2_000,
    stripe_limit: float = 100.0,
    stripe_latency: float = 0.03,
    stripe_workers: int = 8,
    sweep_challenges: int = 1_000_000,
    sweep_due: int = 10_000,
    warning_participants: int = 100_000,
    log=print,
) -> dict[str, Any]:
    env = dict(os.environ)
    staff = proof_staff("bench-staff")
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    logs = run_log_dir("bench-logs")
    log(f"worker logs: {logs}")

    # Every measured phase starts on the same footing: its data written, then the database
    # settled (database_settle: vacuumed and checkpointed), and any workers it uses answering
    # before its clock starts -- the engine's phase (payout_benchmark) does the same.
    log(f"resolve latency through the API ({resolve_samples} samples per size)...")
    report["resolve"] = {}
    for seed, stakers in enumerate(resolve_sizes, start=100):
        challenge = challenge_seed(stakers=stakers, seed=seed)
        database_settle()
        figures = resolve_latency(challenge_id=challenge.pk, staff=staff, samples=resolve_samples)
        report["resolve"][str(stakers)] = figures
        log(f"  {stakers:>9,} stakers: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")

    log(f"baseline (a), one transaction per payout, {baseline_sample:,} payouts...")
    job_id = _resolved_sample(stakers=baseline_sample, seed=11)
    database_settle()
    per_tx = per_transaction_run(job_id=job_id)
    log(f"  {per_tx:,.0f} payouts/s")
    log(f"baseline (b), one Celery task per payout, {baseline_sample:,} payouts...")
    pool = WorkerPool(env, app=BENCH_APP, log_dir=logs)
    job_id = _resolved_sample(stakers=baseline_sample, seed=12)
    try:
        for n in range(workers):
            pool.start("payouts", name=f"baseline{n}")
        workers_ready(workers)
        database_settle()
        per_task = task_per_payout_run(job_id=job_id)
    finally:
        pool.stop_all()
    log(f"  {per_task:,.0f} payouts/s")

    log(f"ledger rail, {winners:,} winners, {workers} worker processes...")
    ledger = payout_benchmark(
        winners=winners, worker_processes=workers, rss_sampler=RssSampler, log_dir=logs
    )
    report["ledger"] = {
        **asdict(ledger),
        "seconds": ledger.end_to_end_seconds,
        "payouts_per_s": ledger.payouts_per_second,
        "worker_peak_rss_mb": round(ledger.worker_peak_rss_bytes / 2**20, 1),
    }
    report["baselines"] = {
        "sample": baseline_sample,
        "per_transaction": {
            "payouts_per_s": round(per_tx),
            "ratio": round(ledger.payouts_per_second / per_tx, 1),
        },
        "task_per_payout": {
            "payouts_per_s": round(per_task),
            "ratio": round(ledger.payouts_per_second / per_task, 1),
        },
    }

    log(f"stripe rail, {stripe_winners:,} winners, {stripe_limit:g}/s limit...")
    # Stripe batches spend their time waiting on the network: a limit of 100/s at 30 ms per
    # call needs about ten calls in flight, hence more (mostly idle) worker processes. It
    # settles the database and waits for its workers itself, after seeding.
    stripe = stripe_rate_benchmark(
        winners=stripe_winners,
        workers=stripe_workers,
        rate=stripe_limit,
        latency=stripe_latency,
        log_dir=logs,
    )
    report["stripe"] = {
        "limit": stripe_limit,
        "latency_ms": stripe_latency * 1000,
        "achieved_per_s": stripe.throughput,
        "share_of_limit": round(stripe.throughput_share, 3),
        "busiest_window": stripe.busiest_window,
        "window_bound": stripe.window_bound,
        "transfers": stripe.requests,
        "workers": stripe_workers,
    }

    log("deadline sweep and warning fan-out...")
    database_settle()
    report["lifecycle"] = {
        "sweep": bench_sweep(challenges=sweep_challenges, due=sweep_due),
        "warnings": bench_warnings(participants=warning_participants),
    }
    return report
