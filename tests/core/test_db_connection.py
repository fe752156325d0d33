"""The web's persistent database connection: a request after PostgreSQL ended it (a restart, a
terminated backend) is served on a new one, not failed, and checking costs no round trip; the
statements every request runs are prepared once per connection and logged with their values."""

import time

import pytest
from django.db import close_old_connections, connection, connections
from django.test.utils import CaptureQueriesContext
from knox.settings import CONSTANTS

from users.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)


def _wallet(client, token: str) -> int:
    # What the WSGI handler does as a request starts (Django's test client does not): drop the
    # connection if it is too old, and have it checked before its first statement.
    close_old_connections()
    return client.get("/api/wallet/", HTTP_AUTHORIZATION=f"Token {token}").status_code


def _backend_pid() -> int:
    return connection.connection.info.backend_pid


def _terminate(pid: int) -> None:
    """End a backend and wait until it is gone: ``pg_terminate_backend`` only signals it, and a
    request in the next instant would still find its connection open (a restart that has
    happened, not one under way, is what these tests are about)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            deadline = time.monotonic() + 10
            while True:
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
                if cursor.fetchone() is None:
                    return
                assert time.monotonic() < deadline, f"backend {pid} still running after 10 s"
                time.sleep(0.01)
    finally:
        other.close()


def test_a_request_after_postgresql_ended_the_connection_gets_a_new_one(client, make_user):
    token, _ = token_create(user=make_user())
    assert _wallet(client, token) == 200
    ended = _backend_pid()
    # When PostgreSQL ends the backend the web's connection is on, between two requests
    _terminate(ended)
    # Then the next request is answered, on a new connection
    assert _wallet(client, token) == 200
    assert _backend_pid() != ended


def test_checking_a_kept_connection_sends_postgresql_nothing(client, make_user, tmp_path):
    token, _ = token_create(user=make_user())
    assert _wallet(client, token) == 200
    kept = connection.connection
    # When a second request runs on the kept connection, every message to PostgreSQL traced
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        kept.pgconn.trace(out.fileno())
        try:
            assert _wallet(client, token) == 200
        finally:
            kept.pgconn.untrace()
    # Then it was the request's own statements only, on the same connection
    assert connection.connection is kept
    sent = trace.read_text()
    assert 'Query\t "SELECT 1"' not in sent
    assert "token_key" in sent


def _prepared_runs(fragment: str) -> list[int]:
    """How many times each statement prepared on this connection whose text holds
    ``fragment`` has run (generic and custom plans)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans + custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            [f"%{fragment}%"],
        )
        return [row[0] for row in cursor.fetchall()]


def test_the_token_lookup_is_prepared_once_per_connection_and_run_again(client, make_user):
    token, _ = token_create(user=make_user())
    # When seven requests run on one kept connection
    for _ in range(7):
        assert _wallet(client, token) == 200
    # Then the token lookup was prepared once and that statement ran seven times
    assert _prepared_runs("token_key") == [7]
    # And a new connection prepares it anew
    _terminate(_backend_pid())
    assert _wallet(client, token) == 200
    assert _prepared_runs("token_key") == [1]


def test_a_prepared_statement_is_logged_with_its_values(client, make_user):
    user = make_user()
    token, _ = token_create(user=user)
    with CaptureQueriesContext(connection) as queries:
        assert _wallet(client, token) == 200
    lookup = next(q["sql"] for q in queries.captured_queries if "token_key" in q["sql"])
    assert f"'{token[: CONSTANTS.TOKEN_KEY_LENGTH]}'" in lookup


def test_without_prepared_statements_the_same_cursor_prepares_nothing():
    # A pooler that keeps no prepared statements: DATABASE_PREPARED_STATEMENTS=false
    options = {**connection.settings_dict["OPTIONS"], "prepare_threshold": None}
    other = type(connections["default"])({**connection.settings_dict, "OPTIONS": options})
    try:
        for n in range(7):
            with other.prepared_cursor() as cursor:
                cursor.execute("SELECT %(n)s::integer + 1", {"n": n})
                assert cursor.fetchone() == (n + 1,)
        with other.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone() == (0,)
    finally:
        other.close()
