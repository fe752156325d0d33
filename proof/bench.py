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

Every phase runs in a fresh database of its own (``proof.bench_env.BenchDatabases``), so a run
measures the same thing whatever ran before it; ``bench_repeat`` runs the whole set ``repeat``
times and sums each figure up as median, min and max.
"""

import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import psutil

from deploy.workers import WorkerPool, run_log_dir
from payouts.services.engine import payout_job_expand
from payouts.services.jobs import challenge_resolve, payout_job_pause
from proof.baselines import per_transaction_run, task_per_payout_run
from proof.bench_env import BenchDatabases, load_now, machine_report
from proof.engine_limits import engine_cost, engine_limits
from proof.evening_bench import evening_bench_seed, evening_benchmark
from proof.figures import summarize
from proof.lifecycle_bench import bench_sweep, bench_warnings
from proof.payout_bench import (
    database_settle,
    payout_bench_seed,
    payout_benchmark,
    workers_ready,
)
from proof.resolve_latency import resolve_latency
from proof.resolve_load import resolve_load_seed, resolve_under_load
from proof.seeding import challenge_seed
from proof.staff import proof_staff
from proof.stake_load import stake_load
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


@dataclass(frozen=True, slots=True)
class BenchSizes:
    """How big each phase is. The defaults are the proof's; ``QUICK`` fits in two minutes."""

    winners: int = 1_000_000  # the headline ledger run, the baselines' ratios refer to it
    scale: tuple[int, ...] = (100_000, 1_000_000, 3_000_000)  # cost per payout against size
    workers: int = 2
    baseline_sample: int = 20_000
    resolve_sizes: tuple[int, ...] = (10, 10_000, 1_000_000)
    resolve_samples: int = 100
    stripe_winners: int = 2_000
    stripe_limit: float = 100.0
    stripe_latency: float = 0.03
    stripe_workers: int = 2  # threaded processes, as production runs the Stripe worker
    stripe_threads: int = 8  # per process
    stripe_baseline_workers: int = 8  # single-task processes: the layout before the threads
    evening_challenges: int = 200  # a busy evening: this many jobs resolved together...
    evening_winners: int = 5_000  # ...of this many winners each
    load_stakers: int = 1_000_000  # resolve latency at this size while a job pays...
    load_paying_winners: int = 1_000_000  # ...this many winners
    stakes: int = 3_000  # stakes through the API per phase (hot challenge, then spread)
    stake_clients: int = 32
    limit_winners: int = 500_000  # entries the database's own limits are timed on
    explain_batches: int = 5  # slices measured one by one for the work per payout
    sweep_challenges: int = 1_000_000
    sweep_due: int = 10_000
    warning_participants: int = 100_000


QUICK = BenchSizes(
    winners=20_000,
    scale=(5_000, 20_000),
    baseline_sample=1_000,
    resolve_sizes=(10, 10_000),
    resolve_samples=30,
    stripe_winners=150,
    stakes=300,
    evening_challenges=20,
    evening_winners=500,
    load_stakers=10_000,
    # Enough to outlast the loaded samples: 50,000 winners were paid before the 30 samples
    # ended (load held: False), so the "loaded" figure was partly an idle one.
    load_paying_winners=150_000,
    limit_winners=60_000,  # each limit's half must outlast one batch per connection
    explain_batches=1,
    sweep_challenges=20_000,
    sweep_due=1_000,
    warning_participants=5_000,
)


def _resolve_seed(sizes: BenchSizes) -> dict[int, int]:
    """One challenge per size in ``sizes.resolve_sizes``: stakers -> challenge id; settled."""
    proof_staff("bench-staff")
    ids = {
        stakers: challenge_seed(stakers=stakers, seed=seed).pk
        for seed, stakers in enumerate(sizes.resolve_sizes, start=100)
    }
    database_settle()
    return ids


def _resolve_phase(
    challenges: dict[int, int], sizes: BenchSizes, log: Callable[[str], None]
) -> dict[str, Any]:
    log(f"resolve latency through the API ({sizes.resolve_samples} samples per size)...")
    staff = proof_staff("bench-staff")
    figures: dict[str, Any] = {}
    for stakers, challenge_id in challenges.items():
        one = resolve_latency(challenge_id=challenge_id, staff=staff, samples=sizes.resolve_samples)
        figures[str(stakers)] = one
        log(
            f"  {stakers:>9,} stakers: p50 {one['p50_ms']} ms, p99 {one['p99_ms']} ms "
            f"(the unmeasured first resolve: {one['warmup_ms']} ms)"
        )
    return figures


def _baselines_phase(sizes: BenchSizes, log: Callable[[str], None]) -> dict[str, Any]:
    sample = sizes.baseline_sample
    log(f"baseline (a), one transaction per payout, {sample:,} payouts...")
    job_id = _resolved_sample(stakers=sample, seed=11)
    database_settle()
    per_tx = per_transaction_run(job_id=job_id)
    log(f"  {per_tx:,.0f} payouts/s")
    log(f"baseline (b), one Celery task per payout, {sample:,} payouts...")
    pool = WorkerPool(dict(os.environ), app=BENCH_APP, log_dir=run_log_dir("bench-logs"))
    job_id = _resolved_sample(stakers=sample, seed=12)
    try:
        for n in range(sizes.workers):
            pool.start("payouts", name=f"baseline{n}")
        workers_ready(sizes.workers)
        database_settle()
        per_task = task_per_payout_run(job_id=job_id)
    finally:
        pool.stop_all()
    log(f"  {per_task:,.0f} payouts/s")
    return {
        "sample": sample,
        "per_transaction_payouts_per_s": round(per_tx),
        "task_per_payout_payouts_per_s": round(per_task),
    }


# Relations written less than this per payout (the commit record, shared by a whole slice) are
# left out of the log line; the report keeps them.
NEGLIGIBLE_BYTES = 0.5


def _limits_phase(sizes: BenchSizes, log: Callable[[str], None]) -> dict[str, Any]:
    log(
        f"the database's own limits and the work per payout, {sizes.limit_winners:,} entries, "
        f"{sizes.explain_batches} slices explained..."
    )
    figures = engine_limits(winners=sizes.limit_winners, explain_batches=sizes.explain_batches)
    limits = figures["limits"]
    log(
        f"  statement {limits['statement']['payouts_per_s']:,}/s, "
        f"posting {limits['posting']['payouts_per_s']:,}/s"
    )
    if by_relation := figures["work_per_payout"].get("wal_bytes_by_relation"):
        log(
            f"  WAL per payout, its entry created paid: "
            f"{sum(size['median'] for size in by_relation.values()):,.0f} B; "
            + ", ".join(
                f"{name} {size['median']:,.0f}"
                for name, size in sorted(by_relation.items(), key=lambda item: -item[1]["median"])
                if size["median"] >= NEGLIGIBLE_BYTES
            )
        )
    return figures


def _ledger_phase(
    seeded: tuple[int, int],
    limits: dict[str, Any],
    sizes: BenchSizes,
    log: Callable[[str], None],
) -> dict[str, Any]:
    challenge_id, warm_up_id = seeded
    ledger = payout_benchmark(
        challenge_id=challenge_id,
        warm_up_id=warm_up_id,
        worker_processes=sizes.workers,
        rss_sampler=RssSampler,
        log_dir=run_log_dir("bench-logs"),
    )
    return {
        **asdict(ledger),
        "seconds": ledger.end_to_end_seconds,
        "worker_peak_rss_mb": round(ledger.worker_peak_rss_bytes / 2**20, 1),
        # Per payout, so sizes compare (flat: the cost does not grow with size), and the
        # engine's share of the database's own limits measured in this run.
        **engine_cost(ledger, limits),
    }


def _stripe_phase(sizes: BenchSizes, log: Callable[[str], None]) -> dict[str, Any]:
    """The Stripe rail on threaded processes, then on single-task ones (the baseline)."""
    figures: dict[str, Any] = {
        "limit": sizes.stripe_limit,
        "latency_ms": sizes.stripe_latency * 1000,
    }
    for name, workers, pool, threads in (
        ("threaded", sizes.stripe_workers, "threads", sizes.stripe_threads),
        ("baseline_solo", sizes.stripe_baseline_workers, "solo", None),
    ):
        log(
            f"stripe rail, {sizes.stripe_winners:,} winners, {sizes.stripe_limit:g}/s limit, "
            f"{workers} {pool} processes..."
        )
        # Each run settles the database and waits for its workers itself, after seeding.
        stripe = stripe_rate_benchmark(
            winners=sizes.stripe_winners,
            workers=workers,
            pool=pool,
            threads=threads,
            rate=sizes.stripe_limit,
            latency=sizes.stripe_latency,
            log_dir=run_log_dir("bench-logs"),
        )
        figures[name] = {
            "processes": workers,
            "threads": stripe.threads,
            "achieved_per_s": stripe.throughput,
            "share_of_limit": round(stripe.throughput_share, 3),
            "busiest_window": stripe.busiest_window,
            "busiest_window_at_s": stripe.busiest_window_at,
            "window_bound": stripe.window_bound,
            "transfers": stripe.requests,
            "worker_cpu_ms_per_request": stripe.worker_cpu_ms_per_request,
        }
    return figures


def _evening_phase(
    seeded: dict[str, Any], sizes: BenchSizes, log: Callable[[str], None]
) -> dict[str, Any]:
    return evening_benchmark(
        seeded=seeded,
        worker_processes=sizes.workers,
        log_dir=run_log_dir("bench-logs"),
        log=log,
    )


def resolve_load_phase(
    databases: BenchDatabases, sizes: BenchSizes, log: Callable[[str], None]
) -> dict[str, Any]:
    """Resolve latency idle and while a job pays, in a fresh database of its own."""
    seed = partial(
        resolve_load_seed, stakers=sizes.load_stakers, paying_winners=sizes.load_paying_winners
    )
    with databases.fresh("resolve_load", seed=seed) as seeded:
        log(
            f"resolve latency at {sizes.load_stakers:,} stakers, idle and while "
            f"{sizes.load_paying_winners:,} winners are paid..."
        )
        return resolve_under_load(
            seeded=seeded,
            samples=sizes.resolve_samples,
            staff=proof_staff("bench-staff"),
            worker_processes=sizes.workers,
            log_dir=run_log_dir("bench-logs"),
            log=log,
        )


def stakes_phase(sizes: BenchSizes, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"stakes through the API, {sizes.stake_clients} clients, {sizes.stakes:,} per phase...")
    return stake_load(
        clients=sizes.stake_clients,
        stakes=sizes.stakes,
        floor_stakes=max(100, sizes.stakes // 3),
        log=log,
    )


def _lifecycle_phase(sizes: BenchSizes, log: Callable[[str], None]) -> dict[str, Any]:
    log("deadline sweep and warning fan-out...")
    database_settle()
    return {
        "sweep": bench_sweep(challenges=sizes.sweep_challenges, due=sizes.sweep_due),
        "warnings": bench_warnings(participants=sizes.warning_participants),
    }


def bench_run(
    *, sizes: BenchSizes, databases: BenchDatabases, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """One run of every phase, each in a fresh database; the figures of that run."""
    # Every measured phase starts on the same footing: an empty database, its data written,
    # then the database settled (database_settle: vacuumed and checkpointed), and any workers
    # it uses answering before its clock starts.
    report: dict[str, Any] = {"load_at_start": load_now()}
    # The big data sets are seeded once and copied for later runs (BenchDatabases.fresh).
    with databases.fresh("resolve", seed=partial(_resolve_seed, sizes)) as challenges:
        report["resolve"] = _resolve_phase(challenges, sizes, log)
    with databases.fresh("baselines"):
        baselines = _baselines_phase(sizes, log)
    with databases.fresh("limits"):
        report["limits"] = _limits_phase(sizes, log)
    report["scale"] = {}
    for winners in sorted({*sizes.scale, sizes.winners}):
        log(f"ledger rail, {winners:,} winners, {sizes.workers} worker processes...")
        seed = partial(payout_bench_seed, winners=winners)
        with databases.fresh(f"ledger_{winners}", seed=seed) as seeded:
            report["scale"][str(winners)] = _ledger_phase(seeded, report["limits"], sizes, log)
    report["ledger"] = report["scale"][str(sizes.winners)]
    engine = report["ledger"]["payouts_per_s"]
    report["baselines"] = {
        **baselines,
        "per_transaction_ratio": round(engine / baselines["per_transaction_payouts_per_s"], 1),
        "task_per_payout_ratio": round(engine / baselines["task_per_payout_payouts_per_s"], 1),
    }
    with databases.fresh("stripe"):
        report["stripe"] = _stripe_phase(sizes, log)
    log(
        f"a busy evening: {sizes.evening_challenges} jobs of {sizes.evening_winners:,} winners "
        "resolved together, next to one job of them all..."
    )
    seed = partial(
        evening_bench_seed, challenges=sizes.evening_challenges, winners=sizes.evening_winners
    )
    with databases.fresh("evening", seed=seed) as seeded:
        report["evening"] = _evening_phase(seeded, sizes, log)
    report["resolve_under_load"] = resolve_load_phase(databases, sizes, log)
    with databases.fresh("stakes"):
        report["stakes"] = stakes_phase(sizes, log)
    with databases.fresh("lifecycle"):
        report["lifecycle"] = _lifecycle_phase(sizes, log)
    return report


def bench_repeat(
    *,
    sizes: BenchSizes,
    repeat: int = 1,
    log: Callable[[str], None] = print,
    keep: Callable[[dict[str, Any]], None] = lambda report: None,
) -> dict[str, Any]:
    """``repeat`` runs of every phase; each figure's median, min and max over the runs, the
    machine they ran on, and every run's own figures. ``keep`` gets the report so far after
    each run, so a long series that is stopped keeps the runs it finished."""
    log(f"worker logs: {run_log_dir('bench-logs')}")
    report: dict[str, Any] = {
        "machine": machine_report(),
        "sizes": asdict(sizes),
        "repeat": 0,
        "summary": None,
        "runs": [],
    }
    with BenchDatabases("bench") as databases:
        for n in range(1, repeat + 1):
            log(f"run {n} of {repeat}")
            report["runs"].append(bench_run(sizes=sizes, databases=databases, log=log))
            report["repeat"] = n
            report["summary"] = summarize(report["runs"])
            keep(report)
    return report


def sizes_from(base: BenchSizes, **overrides: Any) -> BenchSizes:
    """``base`` with every override that was given (None means: keep the base's)."""
    return replace(base, **{key: value for key, value in overrides.items() if value is not None})
