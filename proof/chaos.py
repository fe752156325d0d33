"""The chaos run: pay a ledger job and a Stripe job while a seeded schedule breaks things.

Faults injected (all from one ``random.Random(seed)``, so a seed replays the same schedule):
SIGKILL of a random payout worker every ``kill_interval`` seconds (a replacement starts at
once, as a process supervisor would), one Redis restart and one PostgreSQL restart (embedded
stack only) at seeded points of the ledger job's progress, so that both hit it mid-flight,
every batch task published twice (``proof.chaos_app``), and Stripe faults of every kind the
fake knows (429, 500, lock_timeout, connection reset, timeout, response lost after the
transfer was created) at ``stripe_fault_rate`` until ``stripe_faults_until`` of the Stripe
job's entries are settled.

When the schedule is done the faults stop, the run waits (bounded) for both jobs to end, and
then checks what must hold whatever happened: every entry terminal; no entry paid twice, in
the ledger or at Stripe (the fake's own count per idempotency key); no Stripe transfer without
its ledger entry and none for an unpaid entry; ``ledger_check`` clean; each escrow holding
exactly its unpaid entries.
"""

import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection, connections
from django.test import override_settings

from deploy.workers import ROOT, WorkerPool, run_log_dir
from ledger.selectors import ledger_check
from payouts.models import PayoutJob
from payouts.services.connected_accounts import connected_accounts_seed
from payouts.services.jobs import challenge_resolve
from payouts.services.watchdog import payout_watchdog
from proof.chaos_app import DUPLICATES_KEY
from proof.seeding import challenge_seed
from proof.staff import proof_staff
from tests.fakes.stripe_server import FAULT_KINDS, FakeStripe

logger = logging.getLogger(__name__)

TERMINAL_JOB = {"completed", "completed_with_failures", "cancelled"}
TERMINAL_ENTRY = {"completed", "failed", "cancelled", "reversed"}
# How often the run plays beat's part and calls the watchdog (beat does it every minute; a
# shorter period keeps the run short without changing what the watchdog does).
WATCHDOG_PERIOD = 3.0
WATCHDOG_STALE_SECONDS = 5


@dataclass(frozen=True)
class ChaosConfig:
    winners: int = 100_000
    stripe_winners: int = 2_000
    seed: int = 1
    kills: int = 10
    kill_interval: float = 2.0
    restarts: bool = True
    duplicate_publish: bool = True
    stripe_fault_rate: float = 0.2
    # Share of the Stripe job's entries paid or failed before its faults stop: the job runs
    # under faults for most of its life, not only while the kills last.
    stripe_faults_until: float = 0.9
    ledger_workers: int = 2
    stripe_workers: int = 2
    batch_size: int = 500
    stripe_rate_limit: float = 100.0
    finish_timeout: float = 600.0


@dataclass
class Event:
    action: str  # "kill", "restart_redis", "restart_postgres"
    at: float | None = None  # seconds after the jobs were resolved
    at_ledger_share: float | None = None  # or once the ledger job has paid this share
    detail: str = ""
    done_at: float | None = None

    def due(self, now: float, ledger_share: float) -> bool:
        if self.done_at is not None:
            return False
        if self.at is not None:
            return self.at <= now
        return self.at_ledger_share is not None and self.at_ledger_share <= ledger_share


@dataclass
class Injected:
    kills: int = 0
    redis_restarts: int = 0
    postgres_restarts: int = 0
    duplicate_publishes: int = 0
    stripe_faults: dict[str, int] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)


def schedule_build(config: ChaosConfig, rng: random.Random) -> list[Event]:
    """Kills every ``kill_interval`` seconds; Redis restarts when the ledger job has paid a
    seeded 20-45% of its entries, PostgreSQL at 55-80%."""
    events = [Event("kill", at=config.kill_interval * (i + 1)) for i in range(config.kills)]
    if config.restarts:
        events.append(Event("restart_redis", at_ledger_share=round(rng.uniform(0.2, 0.45), 2)))
        events.append(Event("restart_postgres", at_ledger_share=round(rng.uniform(0.55, 0.8), 2)))
    return events


def _worker_env(fake: FakeStripe, config: ChaosConfig) -> dict[str, str]:
    return {
        **os.environ,
        **fake.env(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PAYOUT_BATCH_SIZE": str(config.batch_size),
        "STRIPE_RATE_LIMIT": str(config.stripe_rate_limit),
        "STRIPE_RETRY_BACKOFF_BASE": "0.2",
        "STRIPE_RETRY_BACKOFF_MAX": "2",
        "STRIPE_LEASE_SECONDS": "10",
        # Database or broker restarts take a few seconds: retry quickly and often enough.
        "TASK_RETRY_BACKOFF_BASE": "0.5",
        "TASK_RETRY_BACKOFF_MAX": "5",
        "TASK_MAX_RETRIES": "12",
        # A killed worker's unacknowledged batch comes back within seconds.
        "CELERY_VISIBILITY_TIMEOUT": "10",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _retrying(what: str, func: Callable[[], Any], *, attempts: int = 40) -> Any:
    """Run ``func`` from the run's own process, riding out a server restart."""
    for attempt in range(attempts):
        try:
            return func()
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            logger.info("%s failed (%r), retrying", what, exc)
            connections.close_all()
            time.sleep(0.5)
    return None


class ChaosRun:
    def __init__(self, config: ChaosConfig, *, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.rng = random.Random(config.seed)
        self.injected = Injected()
        self.stack = os.environ.get("DEVSTACK_DIR")
        self.redis = redis.Redis.from_url(settings.REDIS_URL)

    # --- set-up ----------------------------------------------------------------------------
    def _seed(self) -> tuple[int, int]:
        cfg = self.config
        self.log(f"seeding {cfg.winners:,} ledger winners and {cfg.stripe_winners:,} Stripe ones")
        ledger = challenge_seed(stakers=2 * cfg.winners, seed=cfg.seed, title="chaos ledger")
        stripe = challenge_seed(stakers=2 * cfg.stripe_winners, seed=cfg.seed + 1)
        accounts = connected_accounts_seed(challenge_id=stripe.pk)
        self.fake.accounts_put([{"id": account, "payouts_enabled": True} for account in accounts])
        return ledger.pk, stripe.pk

    def _start_workers(self) -> None:
        cfg = self.config
        for _ in range(cfg.ledger_workers):
            self.pool.start("payouts")
        for _ in range(cfg.stripe_workers):
            self.pool.start("payouts_stripe")
        self.ops = self.pool.start("scheduler,notifications,default", name="ops")

    # --- faults ----------------------------------------------------------------------------
    def _kill(self, event: Event) -> None:
        victims = [p for p in self.pool.alive() if p is not self.ops]
        victim = self.rng.choice(victims)
        queues = victim.args[victim.args.index("-Q") + 1]
        self.pool.kill(victim)
        self.pool.start(queues)
        self.injected.kills += 1
        event.detail += f"; SIGKILL pid {victim.pid} ({queues}), replacement started"

    def _restart(self, event: Event, server: str) -> None:
        if not self.stack:
            event.detail += "; skipped: not the embedded stack"
            return
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "deploy.devstack", "restart", server, "--root", self.stack],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        connections.close_all()
        setattr(
            self.injected,
            f"{server}_restarts",
            getattr(self.injected, f"{server}_restarts") + 1,
        )
        event.detail += f"; {server} down and back in {time.monotonic() - started:.1f}s"

    def _inject(self, event: Event, now: float, progress: str) -> None:
        # What was in flight when the fault hit, so the report shows faults met real work.
        event.detail = progress
        if event.action == "kill":
            self._kill(event)
        else:
            self._restart(event, event.action.removeprefix("restart_"))
        event.done_at = round(now, 2)
        self.log(f"  t={now:6.1f}s {event.action}: {event.detail}")

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = time.monotonic()
        self.fake = FakeStripe().start()
        per_kind = cfg.stripe_fault_rate / len(FAULT_KINDS)
        self.fake.configure(
            seed=cfg.seed, faults=dict.fromkeys(FAULT_KINDS, per_kind), timeout_seconds=2.5
        )
        for name, value in self.fake.env().items():
            setattr(settings, name, float(value) if name == "STRIPE_TIMEOUT" else value)
        self.redis.delete(DUPLICATES_KEY)
        staff = proof_staff("chaos-staff")
        ledger_id, stripe_id = self._seed()
        self.pool = WorkerPool(
            _worker_env(self.fake, cfg),
            app="proof.chaos_app" if cfg.duplicate_publish else "config",
            log_dir=run_log_dir("chaos-logs"),
        )
        try:
            self._start_workers()
            # A job keeps the batch size it was created with: small batches mean many
            # messages to duplicate and a ledger job that lasts through the faults.
            with override_settings(PAYOUT_BATCH_SIZE=cfg.batch_size):
                jobs = {
                    "ledger": challenge_resolve(
                        challenge_id=ledger_id, result="challenger_won", actor=staff, rail="ledger"
                    ).pk,
                    "stripe": challenge_resolve(
                        challenge_id=stripe_id, result="challenger_won", actor=staff, rail="stripe"
                    ).pk,
                }
            self.log(f"resolved: ledger job #{jobs['ledger']}, stripe job #{jobs['stripe']}")
            finished = self._drive(jobs)
        finally:
            self.pool.stop_all()
            stats = self.fake.stats()
            self.fake.stop()
        self.injected.duplicate_publishes = int(self.redis.get(DUPLICATES_KEY) or 0)
        self.injected.stripe_faults = stats.get("faults", {})
        violations = [] if finished else ["jobs did not finish within the time limit"]
        report = self._verify(jobs, stats, violations)
        report["seconds"] = round(time.monotonic() - started, 1)
        return report

    def _drive(self, jobs: dict[str, int]) -> bool:
        """Play the schedule, then wait for both jobs; True if they ended in time."""
        cfg = self.config
        events = schedule_build(cfg, self.rng)
        t0 = time.monotonic()
        next_watchdog = 0.0
        faults_over_at: float | None = None
        while True:
            now = time.monotonic() - t0
            if now >= next_watchdog:
                _retrying("watchdog", lambda: payout_watchdog(stale_seconds=WATCHDOG_STALE_SECONDS))
                next_watchdog = now + WATCHDOG_PERIOD
            rows = _retrying(
                "job status",
                lambda: {
                    job["id"]: job
                    for job in PayoutJob.objects.filter(pk__in=jobs.values()).values(
                        "id", "status", "completed_count", "failed_count", "total_entries"
                    )
                },
            )
            settled = {
                rail: (rows[job_id]["completed_count"] + rows[job_id]["failed_count"])
                / (rows[job_id]["total_entries"] or float("inf"))
                for rail, job_id in jobs.items()
            }
            progress = ", ".join(
                f"{rail} {rows[job_id]['completed_count']}/{rows[job_id]['total_entries']} paid"
                for rail, job_id in jobs.items()
            )
            for event in events:
                if event.due(now, settled["ledger"]):
                    self._inject(event, now, progress)
            stripe_done = (
                settled["stripe"] >= cfg.stripe_faults_until
                or rows[jobs["stripe"]]["status"] in TERMINAL_JOB
            )
            if (
                faults_over_at is None
                and stripe_done
                and all(e.done_at is not None for e in events)
            ):
                faults_over_at = now
                self.fake.configure(faults={})
                events.append(Event("faults_stop", detail=progress, done_at=round(now, 2)))
                self.log(f"  t={now:6.1f}s faults stop ({progress}); waiting for the jobs")
            if faults_over_at is not None and {r["status"] for r in rows.values()} <= TERMINAL_JOB:
                self.log(f"  t={now:6.1f}s both jobs ended ({progress})")
                break
            if now - (faults_over_at or 0) > cfg.finish_timeout:
                return False
            time.sleep(0.2)
        self.injected.timeline = sorted((asdict(e) for e in events), key=lambda e: e["done_at"])
        return True

    # --- the checks ------------------------------------------------------------------------
    def _verify(
        self, jobs: dict[str, int], stats: dict[str, Any], violations: list[str]
    ) -> dict[str, Any]:
        entries: dict[str, dict[str, int]] = {}
        with connection.cursor() as cursor:
            for rail, job_id in jobs.items():
                cursor.execute(
                    "SELECT status, count(*) FROM payouts_payoutentry WHERE job_id = %s "
                    "GROUP BY status",
                    [job_id],
                )
                entries[rail] = dict(cursor.fetchall())
                open_entries = {s: n for s, n in entries[rail].items() if s not in TERMINAL_ENTRY}
                if open_entries:
                    violations.append(f"{rail} job has non-terminal entries: {open_entries}")
                # Every paid entry has exactly one ledger transfer, no unpaid entry has one
                # (the unique key already forbids two).
                cursor.execute(
                    """
                    SELECT count(*) FILTER (WHERE e.status = 'completed' AND t.id IS NULL),
                           count(*) FILTER (WHERE e.status <> 'completed' AND t.id IS NOT NULL
                                            AND e.status <> 'reversed')
                    FROM payouts_payoutentry AS e
                    LEFT JOIN payouts_transfer AS t ON t.idempotency_key = 'payout:' || e.id
                    WHERE e.job_id = %s
                    """,
                    [job_id],
                )
                unposted, posted_unpaid = cursor.fetchone()
                if unposted or posted_unpaid:
                    violations.append(
                        f"{rail} job: {unposted} paid entries without a ledger transfer, "
                        f"{posted_unpaid} unpaid entries with one"
                    )
                # The escrow holds exactly what was not paid out.
                cursor.execute(
                    """
                    SELECT a.balance,
                           (SELECT coalesce(sum(amount), 0) FROM payouts_payoutentry
                            WHERE job_id = j.id AND status <> 'completed'),
                           j.status
                    FROM payouts_payoutjob AS j
                    JOIN challenges_challenge AS c ON c.id = j.challenge_id
                    JOIN payouts_account AS a ON a.id = c.escrow_id
                    WHERE j.id = %s
                    """,
                    [job_id],
                )
                escrow, unpaid, status = cursor.fetchone()
                if status in TERMINAL_JOB and escrow != unpaid:
                    violations.append(f"{rail} job: escrow holds {escrow}, unpaid entries {unpaid}")
            cursor.execute(
                "SELECT 'payout:' || id FROM payouts_payoutentry "
                "WHERE job_id = %s AND status = 'completed'",
                [jobs["stripe"]],
            )
            paid_at_stripe = {key for (key,) in cursor.fetchall()}
        per_key = stats.get("created_per_key", {})
        twice = {key: n for key, n in per_key.items() if n > 1}
        if twice:
            violations.append(f"Stripe created several transfers for keys {sorted(twice)[:10]}")
        orphans = sorted(set(per_key) - set(paid_at_stripe))
        if orphans:
            violations.append(
                f"{len(orphans)} Stripe transfers without a paid ledger entry: {orphans[:10]}"
            )
        missing = sorted(set(paid_at_stripe) - set(per_key))
        if missing:
            violations.append(f"{len(missing)} paid Stripe entries unknown to Stripe")
        ledger = ledger_check()
        violations.extend(f"ledger: {v}" for v in ledger.violations)
        return {
            "config": asdict(self.config),
            "injected": asdict(self.injected),
            "jobs": {
                rail: dict(
                    PayoutJob.objects.filter(pk=job_id).values(
                        "id", "status", "total_entries", "completed_count", "failed_count"
                    )[0]
                )
                for rail, job_id in jobs.items()
            },
            "entries": entries,
            "stripe_transfers": len(per_key),
            "ledger_check": {"ok": ledger.ok, "accounts": ledger.accounts},
            "violations": violations,
        }
