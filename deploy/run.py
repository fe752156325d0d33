"""Run the whole product on one machine: ``make up`` and ``make demo``.

    python -m deploy.run up     embedded stack, migrations, staff user, then web + workers +
                                beat + Flower until SIGINT/SIGTERM
    python -m deploy.run demo   the same, then the product tour (deploy/demo.py); with
                                DEMO_EXIT=1 it exits after the tour's summary

PostgreSQL and Redis come from ``DATABASE_URL`` / ``REDIS_URL`` when set, otherwise from the
embedded stack under ``.devstack/``. Every other setting (``PLATFORM_FEE_BPS``, ...) passes
through the environment to every child. Children run in their own process groups with their
output in ``.devstack/logs/``, so that the terminal shows the tour, and stopping this process
stops all of them: SIGTERM first, SIGKILL for whatever is still alive after a grace period.
"""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy import devstack
from deploy.processes import MIGRATE, ROLES, Dialect

ROOT = Path(__file__).resolve().parent.parent
STACK = Path(os.environ.get("DEVSTACK_DIR", devstack.DEFAULT_ROOT)).resolve()
LOGS = STACK / "logs"
GRACE_SECONDS = 15


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def local_argv(argv: list[str]) -> list[str]:
    """A deploy command run by this interpreter: ``celery ...`` becomes ``python -m celery``,
    so the virtualenv need not be on ``PATH``."""
    program, *args = argv
    return _python(*args) if program == "python" else _python("-m", program, *args)


def process_table(port: int, flower_port: int) -> dict[str, list[str]]:
    """Every role of the process list (``deploy/processes.py``), one process each, on loopback."""
    dialect = Dialect(
        node_host="%h",
        log_level=os.environ.get("LOG_LEVEL", "INFO"),
        web_address="127.0.0.1",
        flower_address="127.0.0.1",
        web_port=port,
        flower_port=flower_port,
    )
    return {role.name: local_argv(role.argv(dialect)) for role in ROLES}


@dataclass
class Supervisor:
    """Starts children in their own process groups and stops every one of them."""

    env: dict[str, str]
    logs: Path = LOGS
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` with the supervisor's environment, or with ``env`` instead."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env if env is None else env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class Stop(Exception):
    """Raised by the signal handler so that ``finally`` blocks stop the children."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def prepare_env() -> dict[str, str]:
    """The environment every child gets: the caller's, plus the servers and a secret key."""
    env = dict(os.environ)
    if not (env.get("DATABASE_URL") and env.get("REDIS_URL")):
        env.update(devstack.stack_env(STACK))
    if not env.get("DJANGO_SECRET_KEY"):
        # A key of this machine's own, kept with the embedded servers, so sessions and tokens
        # survive restarts; production always sets DJANGO_SECRET_KEY.
        key_file = STACK / "secret_key"
        if not key_file.exists():
            STACK.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        env["DJANGO_SECRET_KEY"] = key_file.read_text().strip()
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Plain HTTP on loopback: a browser would drop cookies marked HTTPS-only.
    env.setdefault("SESSION_COOKIE_SECURE", "false")
    env.setdefault("CSRF_COOKIE_SECURE", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The logs under .devstack/logs are read by a person: lines of text, not JSON.
    env.setdefault("LOG_FORMAT", "console")
    return env


def flower_env(env: dict[str, str], username: str, password: str) -> dict[str, str]:
    """Flower's environment: basic auth from ``FLOWER_BASIC_AUTH`` (``user:password``), else
    the staff login. Flower reads it from its environment, never from a command line others
    can list."""
    return {**env, "FLOWER_BASIC_AUTH": env.get("FLOWER_BASIC_AUTH") or f"{username}:{password}"}


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(_python("manage.py", *args), cwd=ROOT, env=env, check=True)


def staff_credentials(env: dict[str, str]) -> tuple[str, str, bool]:
    """``ADMIN_USERNAME`` / ``ADMIN_PASSWORD`` when set, else a generated password kept in
    ``.devstack/admin.json`` (mode 600) so the same login works on the next start."""
    username = env.get("ADMIN_USERNAME") or "admin"
    if env.get("ADMIN_PASSWORD"):
        return username, env["ADMIN_PASSWORD"], False
    creds_file = STACK / "admin.json"
    if creds_file.exists():
        saved = json.loads(creds_file.read_text())
        if saved.get("username") == username:
            return username, saved["password"], True
    password = secrets.token_urlsafe(12)
    STACK.mkdir(parents=True, exist_ok=True)
    creds_file.write_text(json.dumps({"username": username, "password": password}))
    creds_file.chmod(0o600)
    return username, password, True


def _web_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def _workers_answer(env: dict[str, str]) -> bool:
    """Some worker answers a ping: the same check the deploy files' probes run."""
    ping = local_argv(["celery", "-A", "config", "inspect", "ping", "-t", "1"])
    return subprocess.run(ping, cwd=ROOT, env=env, capture_output=True, check=False).returncode == 0


def wait_ready(base_url: str, supervisor: Supervisor, timeout: float = 60) -> None:
    """The web server is ready (``/readyz``: the database answers) and workers answer: only
    then can the demo resolve a challenge and watch it pay. A child that exits, or a timeout,
    stops the start with a message naming what was not ready."""
    deadline = time.monotonic() + timeout
    waiting = "the web server"
    while time.monotonic() < deadline:
        if dead := supervisor.dead():
            raise SystemExit(f"{', '.join(dead)} exited at start: see {LOGS}")
        if not _web_ready(base_url):
            waiting = "the web server"
        elif not _workers_answer(supervisor.env):
            waiting = "the workers (no answer to a ping)"
        else:
            return
        time.sleep(0.5)
    raise SystemExit(f"{waiting} did not become ready within {timeout:.0f}s: see {LOGS}")


def serve(supervisor: Supervisor) -> int:
    """Keep serving until a signal arrives (``Stop``) or a child dies (exit 1)."""
    print("Press Ctrl-C to stop.", flush=True)
    parent = os.getppid()
    while not (dead := supervisor.dead()):
        if os.getppid() != parent:
            # Whoever started us (make, a terminal) is gone: nobody is left to send Ctrl-C.
            raise Stop("parent exited")
        time.sleep(1)
    print(f"{', '.join(dead)} exited unexpectedly: see {LOGS}; stopping.", flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    mode = (argv or sys.argv[1:] or ["up"])[0]
    if mode not in {"up", "demo"}:
        print(__doc__)
        return 2
    port = int(os.environ.get("PORT", "8000"))
    flower_port = int(os.environ.get("FLOWER_PORT", "5555"))
    base_url = f"http://127.0.0.1:{port}"

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    env = prepare_env()
    # The staff console links its queue figures to this Flower.
    env.setdefault("FLOWER_URL", f"http://127.0.0.1:{flower_port}/")
    supervisor = Supervisor(env)
    try:
        print("Preparing the database (migrations, static files, staff user)...", flush=True)
        subprocess.run(local_argv([*MIGRATE, "-v", "0"]), cwd=ROOT, env=env, check=True)
        manage(env, "collectstatic", "--noinput", "-v", "0")
        username, password, generated = staff_credentials(env)
        # The password travels in the environment, never on a command line others can read.
        manage({**env, "ADMIN_PASSWORD": password}, "ensure_staff", "--username", username)
        for name, argv_ in process_table(port, flower_port).items():
            child_env = flower_env(env, username, password) if name == "flower" else None
            supervisor.start(name, argv_, env=child_env)
        wait_ready(base_url, supervisor)
        print(
            f"\nStakehold is running.\n"
            f"  API        {base_url}/api/  (docs: {base_url}/api/docs/)\n"
            f"  Admin      {base_url}/admin/  user {username!r} password {password!r}"
            f"{'  (generated, kept in .devstack/admin.json)' if generated else ''}\n"
            f"  Flower     http://127.0.0.1:{flower_port}/  (basic auth: the admin login, or "
            f"FLOWER_BASIC_AUTH)\n"
            f"  Health     {base_url}/readyz\n"
            f"  Logs       {LOGS}/\n",
            flush=True,
        )
        if mode == "demo":
            tour_env = {**env, "ADMIN_USERNAME": username, "ADMIN_PASSWORD": password}
            manage(tour_env, "demo_tour", "--base-url", base_url)
            if os.environ.get("DEMO_EXIT") == "1":
                return 0
        return serve(supervisor)
    except Stop as stop:
        print(f"\n{stop}: stopping every process...", flush=True)
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
