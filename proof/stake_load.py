"""Stakes through the API under load: ``POST /api/challenges/{id}/stakes/`` from a crowd.

The web server runs as production runs it: gunicorn with ``deploy/gunicorn.py`` and the
command line of the ``web`` role (``deploy/processes.py``: its workers and threads), with the
production settings (``DEBUG`` off, JSON logs, the default throttles and statement timeout).
The load comes from ``proof.stake_client`` in a process of its own: ``clients`` keep-alive
connections, each request from a different user (one stake per user and challenge), closed
loop. Two phases, each after a warm-up that is not timed:

- ``hot``: every stake on one challenge (they contend for its row and its escrow account);
- ``spread``: the same number of stakes over ``spread`` challenges, round robin.

Next to them, from the same run and database: the floor, ``stake_place`` called in this
process in a loop (one thread, no HTTP), so that the API's rate reads as a share of it; the
queries one stake issues in the service and through the whole request path (in process, with
a real token); and per stake over each phase, from the servers' own counters: PostgreSQL
transactions and WAL bytes, Redis commands, and the CPU time of gunicorn and PostgreSQL.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone
from knox.crypto import create_token_string, hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS

from challenges.services import challenge_create, stake_place
from core.redis_client import redis_from_url
from deploy.processes import Dialect, role
from deploy.run import local_argv
from proof.cpu import tree_cpu
from proof.payout_bench import database_settle, database_writes
from proof.queries import queries_captured
from proof.seeding import users_seed

User = get_user_model()

STAKE_AMOUNT = 100
WARMUP_PER_CLIENT = 5
STATS_FLUSH_SECONDS = 1.5
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tokens_seed(user_ids: list[int]) -> list[str]:
    """One knox token per user (what ``POST /api/auth/token/`` hands out), in one INSERT."""
    tokens = [create_token_string() for _ in user_ids]
    expiry = timezone.now() + timedelta(hours=2)
    AuthToken.objects.bulk_create(
        [
            AuthToken(
                digest=hash_token(token),
                token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH],
                user_id=user_id,
                expiry=expiry,
            )
            for token, user_id in zip(tokens, user_ids, strict=True)
        ],
        batch_size=5_000,
    )
    return tokens


def _challenges_open(creators: list[int]) -> list[int]:
    """One open challenge per creator (each creator's open-challenge cap is far away)."""
    due = timezone.now() + timedelta(hours=1)
    return [
        challenge_create(creator=User(pk=pk), title=f"stake load {n}", due_date=due).pk
        for n, pk in enumerate(creators)
    ]


def _plan(tokens: list[str], challenges: list[int], clients: int) -> list[list[list[str]]]:
    """Stake ``n`` with ``tokens[n]`` on ``challenges[n % len]``, sides alternating, dealt to
    the clients in turn."""
    per_client: list[list[list[str]]] = [[] for _ in range(clients)]
    for n, token in enumerate(tokens):
        body = json.dumps({"side": "yes" if n % 2 else "no", "amount": STAKE_AMOUNT})
        path = f"/api/challenges/{challenges[n % len(challenges)]}/stakes/"
        per_client[n % clients].append([path, token, body])
    return per_client


def _server_env() -> dict[str, str]:
    """The server's settings are production's: whatever the bench lifted for itself (the
    statement timeout) goes back to the default; debug and the throttles are never lifted."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_STATEMENT_TIMEOUT", "DEBUG")}
    # The database this process works in (a bench phase's own, a test database), on the server
    # DATABASE_URL names.
    url = urlsplit(env["DATABASE_URL"])
    env["DATABASE_URL"] = urlunsplit(url._replace(path=f"/{connection.settings_dict['NAME']}"))
    for name in ("THROTTLE_AUTH", "THROTTLE_MONEY", "THROTTLE_CREATE", "THROTTLE_STAFF"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WebServer:
    """The ``web`` role's own command on ``port``; its output (access log included) in a file."""

    def __init__(self, port: int, log_path: Path) -> None:
        dialect = Dialect(
            node_host="",
            log_level="INFO",
            web_address="127.0.0.1",
            flower_address="",
            web_port=port,
        )
        self.argv = local_argv(role("web").argv(dialect))
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "WebServer":
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=_server_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start: see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"gunicorn did not become ready: see {self.log_path}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cpu_seconds(self) -> dict[int, float]:
        return tree_cpu(self.proc.pid) if self.proc else {}


def _cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings: processes that exited in between are not counted
    (their last figures are gone), those that started count whole."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _postmaster_pid() -> int | None:
    """PostgreSQL's own pid when it runs on this machine and its folder is readable."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        datadir = Path(cursor.fetchone()[0])
    try:
        return int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _transactions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        return int(cursor.fetchone()[0])


class Counters:
    """Server-side counters over one phase, per stake."""

    def __init__(self, server: WebServer, postmaster: int | None) -> None:
        self.server, self.postmaster = server, postmaster
        self.redis = redis_from_url(settings.REDIS_URL)

    def read(self) -> dict[str, Any]:
        # A PostgreSQL backend reports its transaction counts at most once a second, when idle:
        # wait until the server's connections have reported the phase that just ended.
        time.sleep(STATS_FLUSH_SECONDS)
        _, wal = database_writes()
        return {
            "pg_transactions": _transactions(),
            "wal_bytes": wal,
            "redis_commands": self.redis.info("stats")["total_commands_processed"],
            "web_cpu_s": self.server.cpu_seconds(),
            "pg_cpu_s": tree_cpu(self.postmaster) if self.postmaster else {},
        }

    @staticmethod
    def per_stake(before: dict, after: dict, stakes: int) -> dict[str, float]:
        n = max(1, stakes)
        return {
            "pg_transactions": round((after["pg_transactions"] - before["pg_transactions"]) / n, 2),
            "wal_bytes": round((after["wal_bytes"] - before["wal_bytes"]) / n),
            "redis_commands": round((after["redis_commands"] - before["redis_commands"]) / n, 2),
            "web_cpu_us": round(_cpu_spent(before["web_cpu_s"], after["web_cpu_s"]) / n * 1e6),
            "pg_cpu_us": round(_cpu_spent(before["pg_cpu_s"], after["pg_cpu_s"]) / n * 1e6),
        }


def _drive(port: int, per_client: list[list[list[str]]]) -> dict[str, Any]:
    plan = {"host": "127.0.0.1", "port": port, "requests": per_client}
    done = subprocess.run(
        [sys.executable, "-m", "proof.stake_client"],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(done.stdout)


def _floor(user_ids: list[int], challenge_id: int) -> dict[str, float]:
    """``stake_place`` in this process, one after another: stakes/s without HTTP, and the
    queries of one stake."""
    users = list(User.objects.filter(pk__in=user_ids).order_by("pk"))
    with queries_captured() as captured:
        stake_place(user=users[0], challenge_id=challenge_id, side="yes", amount=STAKE_AMOUNT)
    started = time.perf_counter()
    for n, user in enumerate(users[1:]):
        side = "no" if n % 2 == 0 else "yes"
        stake_place(user=user, challenge_id=challenge_id, side=side, amount=STAKE_AMOUNT)
    seconds = time.perf_counter() - started
    return {
        "stakes": len(users) - 1,
        "per_s": round((len(users) - 1) / seconds, 1),
        "queries_per_stake": len(captured.captured_queries),
    }


def _request_queries(tokens: list[str], challenge_id: int) -> int:
    """Queries of one stake through the whole request path (middleware, token, view), in
    this process; the last of ``tokens`` is the one measured, the first ones warm up."""
    client = Client(HTTP_HOST="localhost")
    url = f"/api/challenges/{challenge_id}/stakes/"
    queries = 0
    for n, token in enumerate(tokens):
        with queries_captured() as captured:
            answer = client.post(
                url,
                {"side": "yes" if n % 2 else "no", "amount": STAKE_AMOUNT},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Token {token}",
            )
        if answer.status_code != 201:
            raise RuntimeError(f"stake answered {answer.status_code}: {answer.content!r}")
        queries = len(captured.captured_queries)
    return queries


def stake_load(
    *,
    clients: int = 32,
    stakes: int = 3_000,
    spread: int = 20,
    floor_stakes: int = 1_000,
    port: int | None = None,
    log=print,
) -> dict[str, Any]:
    """Measure stakes through the API, ``stakes`` on one hot challenge and ``stakes`` spread
    over ``spread`` challenges, by ``clients`` concurrent keep-alive clients; return the
    figures (JSON-able) with the in-process floor and the per-stake work of each phase.

    Creates its own users (funded, with tokens) and challenges in the current database;
    starts and stops its own gunicorn on ``port`` (a free one by default).
    """
    warm = clients * WARMUP_PER_CLIENT
    # Users: per phase a warm-up round and the measured stakes; the floor; 3 request counts.
    needed = 2 * (warm + stakes) + floor_stakes + 1 + 3
    log(f"stake load: seeding {needed:,} users and {spread + 4} challenges...")
    user_ids = users_seed(users=needed, balance=100 * STAKE_AMOUNT)
    creators = users_seed(users=spread + 4, balance=STAKE_AMOUNT)
    challenges = _challenges_open(creators)
    hot, floor_challenge, queries_challenge, warm_challenge = challenges[:4]
    spread_challenges = challenges[4:]
    http_ids, rest = user_ids[: 2 * (warm + stakes)], user_ids[2 * (warm + stakes) :]
    tokens = _tokens_seed(http_ids + rest[-3:])
    http_tokens, query_tokens = tokens[: len(http_ids)], tokens[len(http_ids) :]

    floor = _floor(rest[: floor_stakes + 1], floor_challenge)
    log(f"  floor (stake_place in process): {floor['per_s']:,} stakes/s")
    request_queries = _request_queries(query_tokens, queries_challenge)
    database_settle()
    postmaster = _postmaster_pid()
    port = port or _free_port()
    log_path = Path(tempfile.gettempdir()) / f"stake-load-web-{port}.log"
    report: dict[str, Any] = {
        "clients": clients,
        "stakes_per_phase": stakes,
        "spread_challenges": spread,
        "web": " ".join(role("web").argv(Dialect("", "INFO", "127.0.0.1", ""))[5:]),
        "floor": floor,
        "queries_per_stake": {"service": floor["queries_per_stake"], "request": request_queries},
    }
    with WebServer(port, log_path) as server:
        counters = Counters(server, postmaster)
        phases = {"hot": [hot], "spread": spread_challenges}
        offset = 0
        for name, targets in phases.items():
            warm_tokens = http_tokens[offset : offset + warm]
            measured = http_tokens[offset + warm : offset + warm + stakes]
            offset += warm + stakes
            # Warm-up on a challenge of its own, so the measured ones start from no stakes.
            _drive(port, _plan(warm_tokens, [warm_challenge], clients))
            before = counters.read()
            figures = _drive(port, _plan(measured, targets, clients))
            after = counters.read()
            figures["per_stake"] = Counters.per_stake(before, after, stakes)
            figures["share_of_floor"] = round(figures["per_s"] / floor["per_s"], 3)
            report[name] = figures
            clients_p50 = figures["client_p50_ms"]
            log(
                f"  {name}: {figures['per_s']:,} stakes/s, p50 {figures['p50_ms']} ms, "
                f"p99 {figures['p99_ms']} ms, each client's p50 {clients_p50['fastest']}"
                f"-{clients_p50['slowest']} ms, errors {figures['errors'] or 'none'}"
            )
    report["hot_to_spread"] = round(report["hot"]["per_s"] / max(0.1, report["spread"]["per_s"]), 3)
    return report
