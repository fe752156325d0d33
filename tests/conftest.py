import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from core.errors import DomainError
from deploy.workers import WorkerPool
from ledger.selectors import _CHECK_SQL as LEDGER_CHECK_SQL
from ledger.selectors import ledger_check
from users.services import user_create


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    # Scenarios create up to thousands of users through user_create; the production hasher is
    # deliberately slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_throttles(settings) -> None:
    """Scenarios call the API far faster than people do: no throttle unless a test sets its
    rates (tests/core/test_throttling.py, with the ``throttle_rates`` fixture)."""
    settings.THROTTLE_RATES = dict.fromkeys(settings.THROTTLE_RATES)


@pytest.fixture
def throttle_rates(settings) -> Callable[..., None]:
    """Set throttle rates (``auth="3/min"``) counted in a cache namespace of this test's own,
    so no earlier test or run has spent any of them."""

    def set_rates(**rates: str) -> None:
        settings.CACHES = {
            **settings.CACHES,
            "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"},
        }
        settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, **rates}

    return set_rates


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> None:
    """The test database, with autovacuum off on every table.

    Scenarios swing a table from rolled-back rows to tens of thousands of rows within seconds.
    An autoanalyze that catches a table holding only rolled-back rows tells the planner it is
    empty, and statements planned on that go quadratic: with such statistics the invariants
    check took 69 s for 30,000 accounts (nested loops over accounts x accounts; cut off by the
    statement timeout in CI) and the payouts audit 70 s instead of 0.2 for 18,000 entries.
    Never analyzed (or truncated by a flush), a table is sized by its pages, which rolled-back
    rows only make the planner overestimate. A test that wants statistics runs ANALYZE itself.
    """
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()"
        )
        for (table,) in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


@pytest.fixture(autouse=True)
def _ledger_invariants(request) -> Iterator[None]:
    """After every scenario that touched the database, the ledger must still balance.

    The database fixture is requested from here so that this check runs before its teardown.
    """
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if not (marker or {"db", "transactional_db"} & names):
        yield
        return
    transactional = "transactional_db" in names or bool(marker and marker.kwargs.get("transaction"))
    request.getfixturevalue("transactional_db" if transactional else "db")
    yield
    # A test that left its connection dead (the backend ended under it) would otherwise fail
    # this check and then every later test on that connection: both go on with a new one.
    kept = connection.connection
    if kept is not None and (kept.closed or kept.broken):
        connection.close()
    try:
        report = ledger_check()
    except OperationalError as error:
        # Cancelled by the statement timeout: a read-only query that takes 0.1 s on its own
        # waited for something, or was planned badly; say what every other session was doing
        # and how the check would be planned now.
        sessions = _read_aside(_SESSIONS_SQL)
        try:
            # Planning takes the same table locks: wait for them only briefly.
            rows = _read_aside(f"EXPLAIN {LEDGER_CHECK_SQL}", lock_timeout="2s")
            plan = "\n".join(row["QUERY PLAN"] for row in rows)
        except OperationalError as unplanned:
            plan = f"not planned either ({unplanned})"
        # The sessions last, one a line: a report cut in its middle still shows them.
        pytest.fail(
            f"the ledger check did not finish ({error}); its plan now:\n{plan}\n"
            "meanwhile, every other session:\n" + "\n".join(map(str, sessions))
        )
    assert report.ok, report.violations


# Every other session on the test database: what it runs or waits for, since when, the
# locks it holds or waits for, and who blocks it.
_SESSIONS_SQL = """
SELECT a.pid, a.backend_type, a.state, a.wait_event_type, a.wait_event,
       round(extract(epoch FROM now() - a.xact_start)::numeric, 1) AS xact_seconds,
       pg_blocking_pids(a.pid) AS blocked_by, left(a.query, 160) AS query,
       (SELECT string_agg(l.mode || ' ' || coalesce(l.relation::regclass::text, l.locktype)
                          || CASE WHEN l.granted THEN '' ELSE ' (waiting)' END, ', ')
        FROM pg_locks AS l WHERE l.pid = a.pid AND l.locktype = 'relation') AS locks
FROM pg_stat_activity AS a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
ORDER BY a.pid
"""


def _read_aside(sql: str, *, lock_timeout: str = "0") -> list[dict]:
    """The rows of ``sql`` read on a connection of its own (the test's may be in a failed
    transaction), waiting at most ``lock_timeout`` for a lock (0: as long as it takes)."""
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [lock_timeout])
            cursor.execute(sql)
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        other.close()


@pytest.fixture
def make_user(db) -> Callable:
    counter = iter(range(1, 10**9))

    def make(username: str | None = None, *, staff: bool = False, balance: int = 0):
        from ledger.services import wallet_deposit

        user = user_create(
            username=username or f"user{next(counter)}",
            password="pw-for-tests-1",
            is_staff=staff,
            validate=False,
        )
        if balance:
            wallet_deposit(
                user_id=user.pk, amount=balance, actor=None, idempotency_key=f"test:{user.pk}"
            )
        return user

    return make


@pytest.fixture
def staff(make_user):
    """A staff member holding every staff role (resolvers, treasury, operators)."""
    from users.roles import STAFF_ROLES, staff_role_grant

    user = make_user("staffer", staff=True)
    for role in STAFF_ROLES:
        staff_role_grant(user=user, role=role)
    return user


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


class Workers(WorkerPool):
    """Real Celery worker processes running the test app (the project's tasks plus test-only
    ones); solo pool by default, so SIGKILL kills the running task."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, app="tests.worker_app")


@pytest.fixture(scope="session")
def worker_env(django_db_setup) -> dict[str, str]:
    """Environment for worker processes: the test database, fast retries, short redelivery."""
    db = connection.settings_dict
    host = db.get("HOST") or db["OPTIONS"].get("host", "")
    database_url = (
        f"postgresql://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}@"
        f"{'' if host.startswith('/') else host}/{db['NAME']}"
        + (f"?host={quote(host)}" if host.startswith("/") else "")
    )
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        # As in this process: no throttle (tests/core/test_schema_fuzz.py runs a web server).
        "THROTTLE_AUTH": "",
        "THROTTLE_MONEY": "",
        "THROTTLE_CREATE": "",
        "THROTTLE_STAFF": "",
        "TASK_RETRY_BACKOFF_BASE": "0.3",
        "TASK_RETRY_BACKOFF_MAX": "5",
        "TASK_MAX_RETRIES": "4",
        "CELERY_VISIBILITY_TIMEOUT": "5",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def workers(worker_env, redis_client) -> Iterator[Workers]:
    redis_client.flushdb()  # no message of an earlier test may reach this test's workers
    pool = Workers(worker_env)
    yield pool
    pool.stop_all()
    redis_client.flushdb()


@pytest.fixture
def fake_stripe(settings) -> Iterator:
    """A fake Stripe API on a local port, with this process's settings pointed at it.

    Worker processes get the same settings with ``workers.start(..., **fake_stripe.env())``.
    """
    from tests.fakes.stripe_server import FakeStripe

    fake = FakeStripe().start()
    for name, value in fake.env().items():
        setattr(settings, name, float(value) if name == "STRIPE_TIMEOUT" else value)
    yield fake
    fake.stop()


def run_together(*calls: Callable[[], object]) -> list[object]:
    """Start every call at the same moment, each in its own thread (so on its own database
    connection); return what each returned, or the code of the domain error it raised, in the
    order of ``calls``."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        start.wait(10)
        try:
            results[index] = call()
        except DomainError as exc:
            results[index] = exc.code
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1):
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)
