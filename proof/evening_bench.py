"""A busy evening: many challenges resolved at once, paid by the same workers as one big job.

``evening_bench_seed`` seeds ``challenges`` challenges of ``winners`` winners each and one
challenge with as many winners as all of them together; ``evening_benchmark`` then, on the
same worker processes the ledger benchmark uses (``payouts`` queue, solo pool):

1. resolves the big challenge and waits for its job to finish: the baseline payouts/s;
2. resolves the many challenges one after another (within about a second) and waits for all
   of their jobs: their total payouts/s, next to the baseline;
3. reports fairness from the database's own timestamps (one clock for every figure): for each
   job the seconds from its resolve (``created_at``) to its first paid entry, max and p50 over
   the jobs; and how many jobs waited for another to finish: paid their first winner only
   after some other job of the evening had finished (``finished_at``, its finalize), which
   it did after this one was resolved (``jobs_started_after_another_finished``; the goal is
   0).

Entry ``completed_at`` is the start of the statement that paid it (a ledger slice's, or a
job's start, which its expansion pays), so "first paid" is a few milliseconds early. A job's
finish is its ``finished_at``, not its last entry's ``completed_at``: that is when its last
slice began, so a job whose last slice ran on one worker beside another job's start on the
other would have counted as making that one wait.

Seeding is split from measuring (``evening_bench_seed``, then ``evening_benchmark``), so the
bench can seed once and copy the database for repeated runs. Through the embedded stack (its
own ``--root``), the full size and a small one::

    python -m deploy.devstack run --root .devstack/evening -- python -c "import django; \
        django.setup(); from proof.limits import proof_limits_lift; proof_limits_lift(); \
        from django.core.management import call_command; call_command('migrate', verbosity=0); \
        from proof.evening_bench import evening_bench_seed, evening_benchmark; \
        import json; seeded = evening_bench_seed(challenges=200, winners=5_000); \
        print(json.dumps(evening_benchmark(seeded=seeded)))"

(``challenges=200, winners=1_000`` seeds about a fifth as much.)
"""

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db.models import Min
from django.test import override_settings

from payouts.models import PayoutEntry, PayoutJob
from proof.figures import percentile
from proof.payout_bench import LOSER_RATIO, database_settle, workers_ready
from proof.seeding import challenge_seed

FAIRNESS_GOAL_SECONDS = 5.0


def _seed(winners: int, seed: int) -> int:
    stakers = winners + winners // LOSER_RATIO
    return challenge_seed(stakers=stakers, yes_share=winners / stakers, seed=seed).pk


def _wait(job_ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not PayoutJob.objects.filter(
            pk__in=job_ids, status__in=PayoutJob.ACTIVE_STATUSES
        ).exists():
            return
        time.sleep(0.1)
    raise TimeoutError(f"payout jobs still active after {timeout} s")


def _first_paid(job_ids: list[int]) -> dict[int, datetime]:
    """Each job's first paid entry (``completed_at``)."""
    rows = (
        PayoutEntry.objects.filter(job_id__in=job_ids, status=PayoutEntry.Status.COMPLETED)
        .values("job_id")
        .annotate(first=Min("completed_at"))
    )
    return {row["job_id"]: row["first"] for row in rows}


def _throughput(jobs: list[PayoutJob]) -> dict[str, Any]:
    """Payouts/s from the first resolve to the last job finished (fee, escrow check and
    challenge completion included), all on the database's clock."""
    started = min(job.created_at for job in jobs)
    finished = max(job.finished_at for job in jobs)
    paid = sum(job.completed_count for job in jobs)
    seconds = (finished - started).total_seconds()
    return {
        "payouts": paid,
        "seconds": round(seconds, 2),
        "payouts_per_s": round(paid / seconds) if seconds else 0,
        "all_completed": all(job.status == PayoutJob.Status.COMPLETED for job in jobs),
    }


def _fairness(jobs: list[PayoutJob]) -> dict[str, Any]:
    firsts = _first_paid([job.pk for job in jobs])
    waits = {
        job.pk: (firsts[job.pk] - job.created_at).total_seconds()
        for job in jobs
        if job.pk in firsts
    }
    # A job waited for another to finish when that one finished after this one was resolved
    # and before this one paid its first winner.
    resolved = {job.pk: job.created_at for job in jobs}
    finished = [job.finished_at for job in jobs if job.finished_at]
    after_another = sum(
        1 for pk, first in firsts.items() if any(resolved[pk] < end < first for end in finished)
    )
    return {
        "jobs": len(jobs),
        "first_payout_seconds_max": round(max(waits.values()), 3),
        "first_payout_seconds_p50": round(percentile(list(waits.values()), 0.5), 3),
        "first_payout_goal_seconds": FAIRNESS_GOAL_SECONDS,
        "jobs_over_goal": sum(1 for wait in waits.values() if wait > FAIRNESS_GOAL_SECONDS),
        "jobs_started_after_another_finished": after_another,
    }


def evening_bench_seed(*, challenges: int = 200, winners: int = 5_000) -> dict[str, Any]:
    """The benchmark's data, settled: ``challenges`` challenges of ``winners`` winners (and a
    tenth as many losers) each, one challenge with as many winners as all of them, and a
    two-staker challenge to warm up on. Returns their ids."""
    evening = [_seed(winners, seed=1_000 + n) for n in range(challenges)]
    big = _seed(challenges * winners, seed=999)
    warm_up = challenge_seed(stakers=2).pk
    database_settle()
    return {"evening": evening, "big": big, "warm_up": warm_up}


def evening_benchmark(
    *,
    seeded: dict[str, Any],
    worker_processes: int = 2,
    worker_env: dict[str, str] | None = None,
    batch_size: int = 10_000,
    parallelism: int = 2,
    log_dir: Path | None = None,
    timeout: float = 1_800,
    log=print,
) -> dict[str, Any]:
    """Pay the one big job of ``seeded`` (``evening_bench_seed``), then its many jobs resolved
    together; return the figures.

    Workers are started here (``deploy.workers.WorkerPool``, with ``worker_env``, this
    process's environment by default) and stopped before returning. ``resolve_seconds`` says
    how long the resolves of the evening took (the scenario asks for all within a second).
    """
    from deploy.workers import WorkerPool
    from payouts.services.jobs import challenge_resolve

    evening_ids = seeded["evening"]
    pool = WorkerPool(worker_env or dict(os.environ), log_dir=log_dir)
    try:
        for n in range(worker_processes):
            pool.start("payouts", name=f"evening{n}")
        workers_ready(worker_processes)
        challenge_resolve(challenge_id=seeded["warm_up"], result="draw", actor=None)
        with override_settings(PAYOUT_BATCH_SIZE=batch_size, PAYOUT_PARALLELISM=parallelism):
            log("evening: one big job...")
            big = challenge_resolve(challenge_id=seeded["big"], result="challenger_won", actor=None)
            _wait([big.pk], timeout)
            database_settle()
            log(f"evening: {len(evening_ids)} jobs resolved together...")
            started = time.perf_counter()
            jobs = [
                challenge_resolve(challenge_id=pk, result="challenger_won", actor=None)
                for pk in evening_ids
            ]
            resolve_seconds = time.perf_counter() - started
            _wait([job.pk for job in jobs], timeout)
    finally:
        pool.stop_all()
    big.refresh_from_db()
    jobs = list(PayoutJob.objects.filter(pk__in=[job.pk for job in jobs]))
    baseline = _throughput([big])
    evening = _throughput(jobs)
    report = {
        "challenges": len(jobs),
        "winners_each": max(job.total_entries for job in jobs),
        "worker_processes": worker_processes,
        "batch_size": batch_size,
        "parallelism": parallelism,
        "resolve_seconds": round(resolve_seconds, 3),
        "evening": evening,
        "one_big_job": baseline,
        "throughput_ratio": round(evening["payouts_per_s"] / baseline["payouts_per_s"], 3)
        if baseline["payouts_per_s"]
        else None,
        "fairness": _fairness(jobs),
    }
    log(
        f"evening: {evening['payouts_per_s']:,} payouts/s over {len(jobs)} jobs vs "
        f"{baseline['payouts_per_s']:,}/s for one job (ratio {report['throughput_ratio']}); "
        f"first payout max {report['fairness']['first_payout_seconds_max']} s, p50 "
        f"{report['fairness']['first_payout_seconds_p50']} s; "
        f"{report['fairness']['jobs_started_after_another_finished']} jobs started after "
        f"another finished"
    )
    return report
