"""The chaos run: pay a ledger job and a Stripe job while a seeded schedule breaks things, and
prove that every planned fault hit a job that was still paying.

Faults (all from one ``random.Random(seed)``, so a seed replays the same schedule), each
planned against one job and fired when that job has settled a seeded share of its entries:
SIGKILL of payout workers (``kills`` of them, a replacement started at once, as a process
supervisor would); SIGKILL of Redis (append-only, fsync every second, as in production: what
it had not written is lost) and of PostgreSQL (every open transaction aborted, WAL replayed),
and a clean restart of each (embedded stack only: the run refuses to start elsewhere rather
than skip them); SIGKILL of beat and of the worker running its watchdog sweep, in the middle of
that sweep (``proof.chaos_app`` says when a sweep runs; the kill is proven by the sweep never
reporting its end), after which beat is started again and must sweep again; every batch and
slice task published twice (``proof.chaos_app``); and Stripe faults of every kind the fake
knows (429, 500, lock_timeout, connection reset, timeout, response lost after the transfer was
created) on ``stripe_fault_rate`` of the requests until ``stripe_faults_until`` of the Stripe
job's entries are settled.

When the schedule is done the faults stop, the run waits (bounded) for both jobs to end, and
then checks what must hold whatever happened: every planned fault fired while its job still had
entries to pay, and every Stripe fault kind happened; every entry terminal; the payouts audit
(``payouts.services.audit``) of both jobs -- per entry its one ledger transfer, of its amount,
to its payee; the escrow against the unpaid entries; the totals against the settlement -- and
of the fake's transfers grouped by entry (count, amount, destination); ``ledger_check`` clean.
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

import psutil
import redis
from django.conf import settings
from django.db import connection, connections
from django.test import override_settings

from deploy.workers import ROOT, WorkerPool, run_log_dir
from ledger.selectors import ledger_check
from payouts.models import PayoutJob
from payouts.services.audit import payout_jobs_audit, stripe_transfers_audit
from payouts.services.connected_accounts import connected_accounts_seed
from payouts.services.jobs import challenge_resolve
from proof.chaos_app import DUPLICATES_KEY, SWEEPING, SWEEPS_DONE
from proof.seeding import challenge_seed
from proof.staff import proof_staff
from tests.fakes.stripe_server import FAULT_KINDS, FakeStripe

logger = logging.getLogger(__name__)

# "failed" (finalize refused the escrow) ends a job too, and is a violation of its own.
TERMINAL_JOB = {"completed", "completed_with_failures", "cancelled", "failed"}
TERMINAL_ENTRY = {"completed", "failed", "cancelled", "reversed"}
QUEUES = {"ledger": "payouts", "stripe": "payouts_stripe"}
POLL_SECONDS = 0.1
# How long the run waits for a watchdog sweep to be running so that it can kill beat in it.
SWEEP_WAIT_SECONDS = 60.0
STRIPE_LATENCY = 0.03
# How long a Stripe worker kill waits for a worker in mid-call before it kills one anyway.
MID_CALL_WAIT_SECONDS = 5.0


class ChaosRefused(Exception):
    """The run cannot inject the faults it plans here: it stops before doing anything."""


@dataclass(frozen=True)
class ChaosConfig:
    winners: int = 100_000
    stripe_winners: int = 2_000
    seed: int = 1
    kills: int = 24
    restarts: bool = True
    beat_kill: bool = True
    duplicate_publish: bool = True
    stripe_fault_rate: float = 0.3
    # Share of the Stripe job's entries settled before its faults stop: the job runs under
    # faults for most of its life, not only while the kills last.
    stripe_faults_until: float = 0.9
    ledger_workers: int = 2
    # Stripe worker processes, each of Celery's threads pool as in production: a kill ends
    # every call in flight in that process at once.
    stripe_workers: int = 2
    stripe_threads: int = 4
    batch_size: int = 500
    stripe_rate_limit: float = 100.0
    finish_timeout: float = 600.0


@dataclass
class Event:
    # kill_worker, kill_redis, kill_postgres, restart_redis, restart_postgres, kill_beat
    action: str
    rail: str  # the job it must hit while that job still pays
    at_share: float  # fired once that job has settled this share of its entries
    detail: str = ""
    done_at: float | None = None  # seconds after the jobs were resolved
    # The job was running with entries left to settle when the fault hit it.
    mid_job: bool | None = None
    proven: bool = True  # kill_beat: the sweep it killed never ended


@dataclass
class Injected:
    kills: int = 0
    redis_kills: int = 0
    redis_restarts: int = 0
    postgres_kills: int = 0
    postgres_restarts: int = 0
    beat_kills: int = 0
    sweeps_after_beat_kill: int = 0
    # Stripe worker kills that cut at least one of the victim's own requests in mid-call.
    stripe_kills_mid_call: int = 0
    # Processes that exited without being killed, each started again as a supervisor would.
    self_exits: list[str] = field(default_factory=list)
    duplicate_publishes: int = 0
    stripe_faults: dict[str, int] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)


def schedule_build(config: ChaosConfig, rng: random.Random) -> list[Event]:
    """Two in five worker kills during the ledger job (it is the short one), the others during
    the Stripe job; Redis and PostgreSQL SIGKILLed during the ledger job and restarted cleanly
    during the Stripe job; beat killed mid-sweep during the Stripe job."""
    share = rng.uniform
    ledger_kills = config.kills * 2 // 5
    events = [
        Event("kill_worker", "ledger", round(share(0.05, 0.6), 3)) for _ in range(ledger_kills)
    ]
    events += [
        Event("kill_worker", "stripe", round(share(0.05, 0.85), 3))
        for _ in range(config.kills - ledger_kills)
    ]
    if config.restarts:
        events += [
            Event("kill_redis", "ledger", round(share(0.15, 0.35), 3)),
            Event("kill_postgres", "ledger", round(share(0.4, 0.6), 3)),
            Event("restart_redis", "stripe", round(share(0.2, 0.4), 3)),
            Event("restart_postgres", "stripe", round(share(0.45, 0.65), 3)),
        ]
    if config.beat_kill:
        events.append(Event("kill_beat", "stripe", round(share(0.3, 0.7), 3)))
    return sorted(events, key=lambda e: (e.at_share, e.rail))


def fault_next(events: list[Event], by_rail: dict[str, dict[str, Any]]) -> Event | None:
    """The fault to fire now, given each job's row, or None: one per look at the jobs, and of
    those due, the one whose job is nearest its end. A fault takes seconds (a server restart,
    the wait for a Stripe worker in mid-call), and a short job can finish while another fault
    holds the run."""
    due = [e for e in events if e.done_at is None and _settled(by_rail[e.rail]) >= e.at_share]
    return max(due, key=lambda e: (_settled(by_rail[e.rail]), -e.at_share), default=None)


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


def _retrying(what: str, func: Callable[[], Any], *, attempts: int = 60) -> Any:
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


def _job_rows(job_ids: list[int]) -> dict[int, dict[str, Any]]:
    return {
        job["id"]: job
        for job in PayoutJob.objects.filter(pk__in=job_ids).values(
            "id", "status", "completed_count", "failed_count", "total_entries"
        )
    }


def _settled(row: dict[str, Any]) -> float:
    return (row["completed_count"] + row["failed_count"]) / (row["total_entries"] or float("inf"))


def _paying(row: dict[str, Any]) -> bool:
    done = row["completed_count"] + row["failed_count"]
    return row["status"] == "running" and done < row["total_entries"]


class ChaosRun:
    def __init__(self, config: ChaosConfig, *, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.rng = random.Random(config.seed)
        self.injected = Injected()
        self.stack = os.environ.get("DEVSTACK_DIR")
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        self.ended: set[int] = set()  # pids of processes this run killed or already replaced
        if config.restarts and not self.stack:
            raise ChaosRefused(
                "The chaos run SIGKILLs and restarts PostgreSQL and Redis, which it can do only "
                "to the embedded servers it runs on (`python -m deploy.devstack run --root DIR "
                "-- python manage.py chaos ...`, as `make chaos` does without DATABASE_URL). "
                "DATABASE_URL points at servers it cannot restart: run it on the embedded stack, "
                "or pass --no-restarts to run it knowingly without server faults."
            )

    # --- set-up ----------------------------------------------------------------------------
    def _seed(self) -> tuple[int, int]:
        cfg = self.config
        self.log(f"seeding {cfg.winners:,} ledger winners and {cfg.stripe_winners:,} Stripe ones")
        ledger = challenge_seed(stakers=2 * cfg.winners, seed=cfg.seed, title="chaos ledger")
        stripe = challenge_seed(stakers=2 * cfg.stripe_winners, seed=cfg.seed + 1)
        accounts = connected_accounts_seed(challenge_id=stripe.pk)
        self.fake.accounts_put([{"id": account, "payouts_enabled": True} for account in accounts])
        return ledger.pk, stripe.pk

    def _start_processes(self) -> None:
        cfg = self.config
        for _ in range(cfg.ledger_workers):
            self.pool.start(QUEUES["ledger"])
        for _ in range(cfg.stripe_workers):
            self.pool.start(QUEUES["stripe"], pool="threads", concurrency=cfg.stripe_threads)
        self.pool.start("scheduler,notifications,default", name="ops")
        self._beat_start()

    def _beat_start(self) -> None:
        schedule = self.pool.log_dir / "beat-schedule"
        for stale in self.pool.log_dir.glob("beat-schedule*"):
            stale.unlink()
        self.beat = self.pool.start_beat(schedule=schedule)

    def _workers(self, queue: str) -> list[subprocess.Popen]:
        return [
            p
            for p in self.pool.alive()
            if "-Q" in p.args and queue in p.args[p.args.index("-Q") + 1].split(",")
        ]

    def _kill(self, proc: subprocess.Popen) -> None:
        self.ended.add(proc.pid)
        self.pool.kill(proc)

    def _replace(self, victim: subprocess.Popen) -> None:
        self._kill(victim)
        self.pool.start_like(victim)

    def _supervise(self) -> None:
        """What systemd or Kubernetes does in production (``Restart=always``, a pod's restart
        policy): start again a process that exited by itself. Counted in the report, so a
        worker that crashes shows, but not a violation: the money checks judge the run."""
        for proc in list(self.pool.procs):
            if proc.pid in self.ended or proc.poll() is None:
                continue
            self.ended.add(proc.pid)
            queues = "" if proc is self.beat else proc.args[proc.args.index("-Q") + 1]
            role = f"worker of {queues}" if queues else "beat"
            self.injected.self_exits.append(f"{role} (pid {proc.pid}) exited {proc.returncode}")
            self.log(f"  {role} (pid {proc.pid}) exited by itself ({proc.returncode}): restarted")
            if proc is self.beat:
                self._beat_start()
            else:
                self.pool.start_like(proc)

    # --- faults ----------------------------------------------------------------------------
    def _kill_worker(self, event: Event) -> None:
        workers = self._workers(QUEUES[event.rail])
        victim, in_flight = self.rng.choice(workers), 0
        if event.rail == "stripe":
            victim, in_flight = self._stripe_victim_mid_call(workers) or (victim, 0)
        self._replace(victim)
        self.injected.kills += 1
        event.detail += f"; SIGKILL pid {victim.pid} ({QUEUES[event.rail]}), replacement started"
        if event.rail == "stripe":
            self.injected.stripe_kills_mid_call += in_flight > 0
            event.detail += f"; {in_flight} of its Stripe requests in flight"

    def _stripe_victim_mid_call(
        self, workers: list[subprocess.Popen]
    ) -> tuple[subprocess.Popen, int] | None:
        """A Stripe worker with requests waiting for the fake's answer (matched by the ports of
        its connections to the fake) and how many, watched for up to ``MID_CALL_WAIT_SECONDS``;
        None if no worker was caught in mid-call."""
        deadline = time.monotonic() + MID_CALL_WAIT_SECONDS
        while time.monotonic() < deadline:
            waiting = set(self.fake.stats()["in_flight_ports"])
            for proc in workers if waiting else ():
                try:
                    sockets = psutil.Process(proc.pid).net_connections(kind="tcp")
                except psutil.NoSuchProcess:
                    continue
                mine = {c.laddr.port for c in sockets if c.raddr and c.raddr.port == self.fake.port}
                if mine & waiting:
                    return proc, len(mine & waiting)
            time.sleep(0.005)
        return None

    def _server(self, event: Event) -> None:
        mode, server = event.action.split("_")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "deploy.devstack", "restart", server, "--root", self.stack]
            + (["--kill"] if mode == "kill" else []),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{event.action} failed:\n{done.stderr[-3000:]}")
        connections.close_all()
        counter = f"{server}_{'kills' if mode == 'kill' else 'restarts'}"
        setattr(self.injected, counter, getattr(self.injected, counter) + 1)
        how = "SIGKILLed" if mode == "kill" else "stopped"
        event.detail += f"; {server} {how} and back in {time.monotonic() - started:.1f}s"

    def _kill_beat(self, event: Event) -> None:
        """SIGKILL the worker running a watchdog sweep and beat, while that sweep runs; start
        both again. Proven when the sweep's mark outlives it (it never reached its end)."""
        deadline = time.monotonic() + SWEEP_WAIT_SECONDS
        attempts = 0
        while time.monotonic() < deadline:
            alive = {p.pid: p for p in self.pool.alive()}
            sweeping = {
                task.decode(): int(pid) for task, pid in self.redis.hgetall(SWEEPING).items()
            }
            stale = [task for task, pid in sweeping.items() if pid not in alive]
            if stale:  # marks of sweeps whose worker another fault killed
                self.redis.hdel(SWEEPING, *stale)
            running = [(task, alive[pid]) for task, pid in sweeping.items() if pid in alive]
            if not running:
                time.sleep(0.002)
                continue
            task, worker = running[0]
            self._kill(worker)
            self._kill(self.beat)
            attempts += 1
            proven = bool(self.redis.hexists(SWEEPING, task))
            self.redis.hdel(SWEEPING, task)
            self.pool.start_like(worker)
            self._beat_start()
            self.injected.beat_kills += 1
            if proven:
                self.sweeps_at_beat_kill = int(self.redis.get(SWEEPS_DONE) or 0)
                event.detail += (
                    f"; SIGKILL beat and worker pid {worker.pid} in sweep {task} "
                    f"(attempt {attempts}), both started again"
                )
                return
        event.proven = False
        event.detail += f"; no sweep caught in progress in {attempts} attempt(s)"

    def _inject(self, event: Event, now: float, jobs: dict[str, int]) -> None:
        # Read right before the fault: the proof that it met a job still paying.
        row = _retrying("job status", lambda: _job_rows([jobs[event.rail]]))[jobs[event.rail]]
        event.mid_job = _paying(row)
        event.detail = (
            f"{event.rail} job {row['status']}, "
            f"{row['completed_count'] + row['failed_count']}/{row['total_entries']} settled"
        )
        if event.action == "kill_worker":
            self._kill_worker(event)
        elif event.action == "kill_beat":
            self._kill_beat(event)
        else:
            self._server(event)
        event.done_at = round(now, 2)
        self.log(f"  t={now:6.1f}s {event.action}: {event.detail}")

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = time.monotonic()
        self.fake = FakeStripe().start()
        per_kind = cfg.stripe_fault_rate / len(FAULT_KINDS)
        # Each answer takes as long as a real one (about 30 ms), so a killed Stripe worker
        # has calls waiting on the network, as in production.
        self.fake.configure(
            seed=cfg.seed,
            faults=dict.fromkeys(FAULT_KINDS, per_kind),
            timeout_seconds=2.5,
            latency=STRIPE_LATENCY,
        )
        for name, value in self.fake.env().items():
            setattr(settings, name, float(value) if name == "STRIPE_TIMEOUT" else value)
        self.redis.delete(DUPLICATES_KEY, SWEEPING, SWEEPS_DONE)
        self.sweeps_at_beat_kill: int | None = None
        staff = proof_staff("chaos-staff")
        ledger_id, stripe_id = self._seed()
        self.pool = WorkerPool(
            _worker_env(self.fake, cfg),
            app="proof.chaos_app",
            log_dir=run_log_dir("chaos-logs"),
        )
        try:
            if not cfg.duplicate_publish:
                self.pool.env["CHAOS_NO_DUPLICATES"] = "1"
            self._start_processes()
            # A job keeps the batch size it was created with: small batches mean many
            # messages to duplicate and a ledger job that lasts through the faults. The
            # Stripe job takes one batch per thread of its workers.
            with override_settings(
                PAYOUT_BATCH_SIZE=cfg.batch_size,
                STRIPE_PARALLELISM=cfg.stripe_workers * cfg.stripe_threads,
            ):
                jobs = {
                    "ledger": challenge_resolve(
                        challenge_id=ledger_id, result="challenger_won", actor=staff, rail="ledger"
                    ).pk,
                    "stripe": challenge_resolve(
                        challenge_id=stripe_id, result="challenger_won", actor=staff, rail="stripe"
                    ).pk,
                }
            self.log(f"resolved: ledger job #{jobs['ledger']}, stripe job #{jobs['stripe']}")
            events, finished = self._drive(jobs)
        finally:
            self.pool.stop_all()
            stats = self.fake.stats()
            transfers = self.fake.transfers()
            self.fake.stop()
        self.injected.duplicate_publishes = int(self.redis.get(DUPLICATES_KEY) or 0)
        if self.sweeps_at_beat_kill is not None:
            done = int(self.redis.get(SWEEPS_DONE) or 0)
            self.injected.sweeps_after_beat_kill = done - self.sweeps_at_beat_kill
        self.injected.stripe_faults = stats.get("faults", {})
        violations = [] if finished else ["jobs did not finish within the time limit"]
        violations += self._fault_violations(events)
        report = self._verify(jobs, transfers, violations)
        report["seconds"] = round(time.monotonic() - started, 1)
        return report

    def _drive(self, jobs: dict[str, int]) -> tuple[list[Event], bool]:
        """Play the schedule, then wait for both jobs; the events, and True if the jobs ended
        in time."""
        cfg = self.config
        events = schedule_build(cfg, self.rng)
        t0 = time.monotonic()
        faults_over_at: float | None = None
        finished = False
        while True:
            now = time.monotonic() - t0
            self._supervise()
            rows = _retrying("job status", lambda: _job_rows(list(jobs.values())))
            by_rail = {rail: rows[job_id] for rail, job_id in jobs.items()}
            event = fault_next(events, by_rail)
            if event is not None:
                self._inject(event, time.monotonic() - t0, jobs)
                continue
            progress = ", ".join(
                f"{rail} {row['completed_count']}/{row['total_entries']} paid"
                for rail, row in by_rail.items()
            )
            over = {rail: row["status"] in TERMINAL_JOB for rail, row in by_rail.items()}
            stripe_done = _settled(by_rail["stripe"]) >= cfg.stripe_faults_until or over["stripe"]
            # Events whose job ended before their share was reached will never fire: they are
            # reported as violations, not waited for.
            pending = [e for e in events if e.done_at is None and not over[e.rail]]
            if faults_over_at is None and stripe_done and not pending:
                faults_over_at = now
                self.fake.configure(faults={})
                self.log(f"  t={now:6.1f}s faults stop ({progress}); waiting for the jobs")
            if faults_over_at is not None and all(over.values()):
                self.log(f"  t={now:6.1f}s both jobs ended ({progress})")
                finished = True
                break
            if now - (faults_over_at or 0) > cfg.finish_timeout:
                break
            time.sleep(POLL_SECONDS)
        timeline = sorted(events, key=lambda e: (e.done_at is None, e.done_at or 0))
        self.injected.timeline = [asdict(e) for e in timeline]
        return events, finished

    def _fault_violations(self, events: list[Event]) -> list[str]:
        """Every planned fault fired, while its job was still paying; every Stripe fault kind
        and the duplicate messages happened; beat swept again after it was killed."""
        found = []
        for e in events:
            what = f"{e.action} planned at {e.at_share:.0%} of the {e.rail} job"
            if e.done_at is None:
                found.append(f"{what} never fired: the job ended first")
            elif not e.mid_job:
                found.append(f"{what} fired after the job stopped paying ({e.detail})")
            elif not e.proven:
                found.append(f"{what} did not kill a sweep in progress ({e.detail})")
        missing = [kind for kind in FAULT_KINDS if not self.injected.stripe_faults.get(kind)]
        if missing:
            found.append(f"Stripe faults of kinds {missing} never happened")
        if self.config.duplicate_publish and not self.injected.duplicate_publishes:
            found.append("no batch or slice message was published twice")
        if self.config.beat_kill and not self.injected.sweeps_after_beat_kill:
            found.append("beat never swept again after it was killed")
        return found

    # --- the checks ------------------------------------------------------------------------
    def _verify(
        self, jobs: dict[str, int], transfers: list[dict[str, Any]], violations: list[str]
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
        audit = payout_jobs_audit(job_ids=list(jobs.values()))
        violations.extend(f"payouts: {v}" for v in audit.violations)
        at_stripe = stripe_transfers_audit(transfers=transfers, job_ids=[jobs["stripe"]])
        violations.extend(f"stripe: {v}" for v in at_stripe.violations)
        ledger = ledger_check()
        violations.extend(f"ledger: {v}" for v in ledger.violations)
        job_rows = _job_rows(list(jobs.values()))
        for rail, job_id in jobs.items():
            if job_rows[job_id]["status"] not in TERMINAL_JOB - {"failed"}:
                violations.append(f"{rail} job ended {job_rows[job_id]['status']}")
        return {
            "config": asdict(self.config),
            "injected": asdict(self.injected),
            "jobs": {rail: job_rows[job_id] for rail, job_id in jobs.items()},
            "entries": entries,
            "stripe_transfers": len(transfers),
            "audit": {"entries": audit.entries, "stripe_entries": at_stripe.entries},
            "ledger_check": {"ok": ledger.ok, "accounts": ledger.accounts},
            "violations": violations,
        }
