"""Celery worker processes started, killed and stopped from Python.

The test suite, the benchmark and the chaos run all need real worker processes that they can
SIGKILL at will; this is the one place that knows how to start and stop them. Each worker runs
in its own process group, so a kill takes its pool children with it.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_log_dir(name: str) -> Path:
    """The folder for one kind of run's worker logs: under the embedded stack's folder
    (``DEVSTACK_DIR``, set by ``deploy.devstack run``) or ``.devstack/``."""
    return Path(os.environ.get("DEVSTACK_DIR") or ROOT / ".devstack") / name


class WorkerPool:
    def __init__(self, env: dict[str, str], *, app: str = "config", log_dir: Path | None = None):
        self.env = env
        self.app = app
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self._started = 0
        # How each worker was started (by pid), so that a replacement runs the same pool.
        self._options: dict[int, dict] = {}

    def start(
        self,
        queues: str = "default",
        *,
        name: str | None = None,
        pool: str = "solo",
        concurrency: int = 1,
        loglevel: str = "WARNING",
        **extra_env: str,
    ) -> subprocess.Popen:
        """Start one worker consuming ``queues``. The solo pool runs tasks in the worker
        process itself, so a SIGKILL of that process kills the task mid-flight; so does the
        threads pool (``concurrency`` threads), all of its tasks at once."""
        options = {"pool": pool, "concurrency": concurrency, "loglevel": loglevel, **extra_env}
        self._started += 1
        name = name or f"w{self._started}"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "-l",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        proc = self._spawn(argv, name, extra_env)
        self._options[proc.pid] = {"queues": queues, **options}
        return proc

    def start_like(self, proc: subprocess.Popen) -> subprocess.Popen:
        """Start another worker as ``proc`` was started (queues, pool, environment), under a
        new name: what a process supervisor does after a crash."""
        return self.start(**self._options[proc.pid])

    def start_beat(self, *, name: str = "beat", schedule: Path, **extra_env: str):
        """Start a beat process of this pool's app with the file scheduler and its state in
        ``schedule`` (so the database's schedule is neither used nor touched); killed and
        stopped like a worker."""
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "beat",
            "-S",
            "celery.beat:PersistentScheduler",
            "-s",
            str(schedule),
            "--max-interval",
            "1",
            "-l",
            "WARNING",
        ]
        return self._spawn(argv, name, extra_env)

    def _spawn(self, argv: list[str], name: str, extra_env: dict[str, str]) -> subprocess.Popen:
        # Without a log folder a process writes to our standard error: its banner and log are
        # diagnostics, and standard output may carry a report (``manage.py bench --json``).
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **extra_env},
                start_new_session=True,
                stdout=output if output is not None else 2,  # our standard error
                stderr=subprocess.STDOUT if output is not None else None,
            )
        finally:
            if output is not None:
                output.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [proc for proc in self.procs if proc.poll() is None]

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and everything it started: no cleanup, no acknowledgement."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self, *, grace: float = 10) -> None:
        """Warm shutdown (SIGTERM) of every worker; SIGKILL whatever outlives ``grace``."""
        for proc in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(proc)
