"""Benchmark of the ledger rail: resolve a challenge with N winners, pay them through real
Celery worker processes, and time it. Not a test: ``manage.py bench`` calls it, or run it
through the embedded stack, for example::

    DJANGO_SETTINGS_MODULE=config.settings python -m deploy.devstack run -- python -c \
        "import django; django.setup(); from proof.payout_bench import payout_bench_seed, \
        payout_benchmark; ids = payout_bench_seed(winners=100_000); \
        payout_benchmark(challenge_id=ids[0], warm_up_id=ids[1])"

Figures reported: resolve latency (the staff request's service call, commit and enqueue
included, in a warm process), end-to-end seconds (resolve call to job completed: every wallet
credited, fee collected, escrow 0), payouts/s end to end and over the batch phase alone, the
time the job's notifications take (their own task, after completion) and, when asked, the
workers' peak memory. The baselines (one transaction or one task per payout) are measured
next to it by ``manage.py bench`` (``proof.baselines``).
"""

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models import Max
from django.test import override_settings

from config.celery import app as celery_app
from ledger.models import Account
from ledger.selectors import ledger_check
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.engine import payout_job_notify

# A winning side of N and a losing side of N / LOSER_RATIO: enough losing pool to make every
# payout carry winnings (a share computed, a remainder ranked) rather than a bare refund.
LOSER_RATIO = 10


@dataclass(frozen=True, slots=True)
class PayoutBenchReport:
    winners: int
    worker_processes: int
    batch_size: int
    parallelism: int
    resolve_ms: float
    expand_seconds: float
    pay_seconds: float
    end_to_end_seconds: float
    payouts_per_second: float
    batch_phase_payouts_per_second: float
    worker_peak_rss_bytes: int
    rows_written: int
    wal_bytes_written: int
    notify_seconds: float
    job_status: str
    ledger_ok: bool
    escrow_balance: int
    fee_collected: int


def payout_bench_seed(*, winners: int) -> tuple[int, int]:
    """The benchmark's data, settled: a challenge of ``winners`` winners (and a tenth as many
    losers), and a two-staker challenge to warm up on. Returns both challenges' ids."""
    from proof.seeding import challenge_seed

    challenge = challenge_seed(
        stakers=winners + winners // LOSER_RATIO,
        yes_share=winners / (winners + winners // LOSER_RATIO),
        seed=1,
    )
    warm_up = challenge_seed(stakers=2)
    database_settle()
    return challenge.pk, warm_up.pk


def payout_benchmark(
    *,
    challenge_id: int,
    warm_up_id: int,
    worker_processes: int = 2,
    batch_size: int = 10_000,
    parallelism: int = 2,
    worker_env: dict[str, str] | None = None,
    app: str = "config",
    rss_sampler: Callable[[Any], AbstractContextManager] | None = None,
    log_dir: Path | None = None,
    timeout: float = 1_800,
) -> PayoutBenchReport:
    """Pay the winners of ``challenge_id`` (seeded by ``payout_bench_seed``) with
    ``worker_processes`` workers, return the figures.

    The workers share this process's database and Redis (``worker_env``, this process's
    environment by default) and consume the ``payouts`` queue only. ``rss_sampler``, given the
    worker pool, makes a context manager whose ``peak_bytes`` is reported as the workers' peak
    memory. Worker output goes to ``log_dir`` when given, else to standard error. Prints the
    report.
    """
    from deploy.workers import WorkerPool
    from payouts.services.jobs import challenge_resolve

    pool = WorkerPool(worker_env or dict(os.environ), app=app, log_dir=log_dir)
    sampler = rss_sampler(pool) if rss_sampler else contextlib.nullcontext()
    try:
        for n in range(worker_processes):
            pool.start("payouts", name=f"bench{n}")
        workers_ready(worker_processes)
        # A web process has served requests before staff resolve (connections open, code
        # paths warm); one small resolve first makes this process comparable.
        challenge_resolve(challenge_id=warm_up_id, result="draw", actor=None)
        with (
            sampler,
            override_settings(PAYOUT_BATCH_SIZE=batch_size, PAYOUT_PARALLELISM=parallelism),
        ):
            rows_before, wal_before = database_writes()
            started = time.perf_counter()
            job = challenge_resolve(challenge_id=challenge_id, result="challenger_won", actor=None)
            resolve_ms = (time.perf_counter() - started) * 1000
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                job.refresh_from_db()
                if job.status not in PayoutJob.ACTIVE_STATUSES:
                    break
                time.sleep(0.05)
            end_to_end = time.perf_counter() - started
    finally:
        pool.stop_all()
    # After the workers' connections closed: a backend reports its row counts at the latest
    # when it exits.
    rows_after, wal_after = database_writes()
    # Notifications are created after the job completes, by their own task on the
    # notifications queue (no worker of it runs here): time that statement in this process.
    started = time.perf_counter()
    payout_job_notify(job_id=job.pk)
    notify_seconds = time.perf_counter() - started
    last_paid = PayoutEntry.objects.filter(job=job).aggregate(last=Max("completed_at"))["last"]
    pay_seconds = (last_paid - job.started_at).total_seconds() if last_paid else 0.0
    report = PayoutBenchReport(
        winners=job.total_entries,
        worker_processes=worker_processes,
        batch_size=batch_size,
        parallelism=parallelism,
        resolve_ms=round(resolve_ms, 2),
        expand_seconds=round((job.started_at - job.created_at).total_seconds(), 2),
        pay_seconds=round(pay_seconds, 2),
        end_to_end_seconds=round(end_to_end, 2),
        payouts_per_second=round(job.completed_count / end_to_end),
        batch_phase_payouts_per_second=round(job.completed_count / pay_seconds)
        if pay_seconds
        else 0,
        worker_peak_rss_bytes=getattr(sampler, "peak_bytes", 0),
        rows_written=rows_after - rows_before,
        wal_bytes_written=wal_after - wal_before,
        notify_seconds=round(notify_seconds, 2),
        job_status=job.status,
        ledger_ok=ledger_check().ok,
        escrow_balance=Account.objects.get(pk=job.challenge.escrow_id).balance,
        fee_collected=job.fee_amount,
    )
    print(
        f"ledger rail: {report.winners:,} winners, {worker_processes} workers, batch "
        f"{batch_size} x {parallelism}: resolve {report.resolve_ms:.1f} ms; expand "
        f"{report.expand_seconds:.1f} s; paid in {report.pay_seconds:.1f} s "
        f"({report.batch_phase_payouts_per_second:,}/s); end to end "
        f"{report.end_to_end_seconds:.1f} s = {report.payouts_per_second:,} payouts/s, "
        f"{report.rows_written:,} rows and {report.wal_bytes_written / 2**20:,.0f} MB of WAL "
        f"written; job "
        f"{report.job_status}, ledger {'ok' if report.ledger_ok else 'BROKEN'}, escrow "
        f"{report.escrow_balance}, fee {report.fee_collected}; notifications created in "
        f"{report.notify_seconds:.1f} s after completion"
    )
    return report


def database_settle() -> None:
    """Pay the debt of what was just written before measuring anything else: vacuum it (so
    autovacuum does not take the measured work's CPU, and index-only scans get a fresh
    visibility map) and flush its dirty pages. A Stripe phase run right after the
    million-payout one reached 41% of its limit instead of 99% without this."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")


def database_writes() -> tuple[int, int]:
    """Rows inserted + updated so far in this database, and WAL bytes written so far."""
    with connection.cursor() as cursor:
        # Statistics are cached per transaction: read the counters as they are now.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT tup_inserted + tup_updated, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        rows, wal = cursor.fetchone()
    return int(rows), int(wal)


def workers_ready(count: int, timeout: float = 60) -> None:
    """Wait until ``count`` workers answer a ping: a clock started before would time their
    start-up (a few seconds of Python imports), not the work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(celery_app.control.ping(timeout=0.5) or []) >= count:
            return
    raise TimeoutError(f"{count} workers did not answer within {timeout} s")
