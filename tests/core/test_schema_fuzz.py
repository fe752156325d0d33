"""Schemathesis over the project's own OpenAPI schema, against a live server (gunicorn) with
real Celery workers, as an anonymous caller, as a user and as staff: every operation, with the
checks not_a_server_error, status_code_conformance and response_schema_conformance. No
failure is allowed, and the ledger must balance afterwards.

Bounded: a fixed seed, a fixed number of examples per operation and a time budget per caller.
"""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from challenges.services import challenge_create, challenges_sweep_deadlines, stake_place
from ledger.selectors import ledger_check
from ledger.services import wallet_deposit
from tests.fakes.pusher_server import FakePusher
from users.roles import STAFF_ROLES, staff_role_grant
from users.services import token_create, user_create

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SEED = 20261125
MAX_EXAMPLES = 25
SECONDS_PER_CALLER = 50
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
LOGOUT = "^/api/auth/logout"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the web server exited at start"
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail("the web server did not start")


def _people() -> dict[str, str | None]:
    """The three callers, and data for them to find: open and expired challenges, money."""
    staff = user_create(username="fuzz-staff", password="unused-pass-1", validate=False)
    for role in STAFF_ROLES:
        staff_role_grant(user=staff, role=role)
    user = user_create(username="fuzz-user", password="unused-pass-1", validate=False)
    other = user_create(username="fuzz-other", password="unused-pass-1", validate=False)
    for who in (user, other):
        wallet_deposit(user_id=who.pk, amount=100_000, actor=None, idempotency_key=f"fuzz:{who.pk}")
    due = timezone.now() + timedelta(hours=1)
    for i in range(3):
        challenge = challenge_create(
            creator=other, title=f"Fuzz {i}", due_date=due, challenged_username="fuzz-user"
        )
        stake_place(user=other, challenge_id=challenge.pk, side="yes", amount=100)
        stake_place(user=user, challenge_id=challenge.pk, side="no", amount=100)
    with time_machine.travel(due - timedelta(minutes=1)):
        challenge_create(creator=other, title="Fuzz expiring", due_date=due)
    with time_machine.travel(due + timedelta(seconds=1)):
        challenges_sweep_deadlines()
    return {
        "anonymous": None,
        "user": token_create(user=user)[0],
        "staff": token_create(user=staff)[0],
    }


def _schemathesis(
    schema: Path, base_url: str, token: str | None, *, seconds: int, only: list[str]
) -> str:
    # Schemathesis signs up and logs in by itself when it sees a sign-up and a login: the
    # anonymous caller must stay anonymous, and the others use the token given.
    config = schema.with_name("schemathesis.toml")
    config.write_text("[auth]\nauto-signup = false\n")
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        str(schema),
        "--url",
        base_url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--max-time",
        str(seconds),
        # One worker: with two, Python 3.11's ast.parse (used by Hypothesis to describe
        # filters) can fail in concurrent threads ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        *only,
    ]
    if token:
        argv += ["-H", f"Authorization: Token {token}"]
    # Run in the temporary folder: Schemathesis keeps a cache of crashes in its working folder.
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds * 4,
        check=False,
        cwd=schema.parent,
    )
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    return result.stdout


def _summary(output: str) -> list[str]:
    """Schemathesis's own figures: operations tested, test cases, and its warnings."""
    lines = [line.strip() for line in output.splitlines()]
    picked = [line for line in lines if line.startswith(("Tested:", "⚠"))]
    picked += [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "Test cases:"]
    return picked


def test_the_whole_schema_holds_for_every_caller(
    worker_env, workers, fake_stripe, tmp_path, capsys
):
    # Given the project's own schema, as staff see it
    staff_client = APIClient()
    tokens = _people()
    staff_client.credentials(HTTP_AUTHORIZATION=f"Token {tokens['staff']}")
    response = staff_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = tmp_path / "openapi.json"
    schema.write_bytes(response.content)
    operations = sum(
        1
        for methods in json.loads(response.content)["paths"].values()
        for method in methods
        if method in {"get", "post", "put", "patch", "delete"}
    )
    # And a live server with real workers, on the test database; Stripe and Pusher are the
    # local fakes (without them, payout accounts and channel auth answer 503 by design)
    pusher = FakePusher().start()
    outside = {
        **fake_stripe.env(),
        **{
            name: str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in pusher.settings().items()
        },
    }
    workers.start("payouts,payouts_stripe,notifications,scheduler,default", name="fuzz", **outside)
    port = _free_port()
    access_log = tmp_path / "access.log"
    env = {**worker_env, **outside, "ALLOWED_HOSTS": "127.0.0.1", "DEBUG": "false"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--access-logfile",
            str(access_log),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("wb"),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base_url}/healthz", server)
        # When Schemathesis drives every operation as each caller
        summaries = {}
        for caller, token in tokens.items():
            # Signing out revokes the caller's token, which would turn the rest of the run
            # into 401s: the two logout operations run last, in a pass of their own.
            passes = [(SECONDS_PER_CALLER, [])]
            if token:
                passes = [
                    (SECONDS_PER_CALLER - 10, ["--exclude-path-regex", LOGOUT]),
                    (10, ["--include-path-regex", LOGOUT]),
                ]
            for seconds, only in passes:
                output = _schemathesis(schema, base_url, token, seconds=seconds, only=only)
                summaries.setdefault(caller, []).extend(_summary(output))
    finally:
        server.terminate()
        server.wait(timeout=30)
        pusher.stop()
    # gunicorn's access log: one line per request, the status after the quoted request line
    statuses = Counter(
        match.group(1)[0] + "xx"
        for line in access_log.read_text().splitlines()
        if (match := re.search(r'" (\d{3}) ', line))
    )
    requests = sum(statuses.values())
    # Then nothing failed (each run exited 0), and the ledger balances
    report = ledger_check()
    assert report.ok, report.violations
    with capsys.disabled():
        print(
            f"\nSchemathesis: {operations} operations, seed {SEED}, {requests} requests served "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})"
        )
        for caller, lines in summaries.items():
            print(f"  {caller}: {' | '.join(lines)}")
    assert requests > operations * 3
    assert statuses["2xx"] > operations
    assert "5xx" not in statuses
