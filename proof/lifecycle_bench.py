"""Benchmarks of the deadline sweep and the warning fan-out (not tests; ``manage.py
bench_lifecycle`` prints them, and the project-wide ``manage.py bench`` calls the same functions).

Each function builds its data set-based in SQL and commits it, then times what one beat tick
does: the beat task's body (the service, its commit with the deferred foreign-key checks, the
delivery tasks it enqueues after commit, and for the sweep the refund signal). Timing inside an
enclosing transaction that is rolled back would leave out the commit and everything after it,
and would time updates of rows inserted by the same transaction, which PostgreSQL treats
differently (foreign keys re-checked, no hint bits). Afterwards every row the run made is
deleted; the delivery tasks it queued find nothing to send. Next to each figure it measures, in
the same run and on the same data, the per-row baseline of the source documents (one statement
per challenge or per participant from a Python loop, rolled back), and the work per row from
PostgreSQL's own counters (WAL bytes, index entries, rows).
"""

import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from challenges.models import Challenge
from challenges.tasks import (
    challenges_send_deadline_warnings_task,
    challenges_sweep_deadlines_task,
)
from notifications.models import Notification
from notifications.services import DELIVERY_CHUNK
from proof.cpu import process_cpu
from proof.queries import queries_captured
from users.services import user_create

BASELINE_SAMPLE = 1_000

_CHALLENGES_SQL = """
WITH escrow AS (
    INSERT INTO payouts_account (kind, currency, balance)
    SELECT 'challenge_escrow', %(currency)s, 0 FROM generate_series(1, %(count)s)
    RETURNING id
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY id) AS i FROM escrow
)
INSERT INTO challenges_challenge
    (title, description, category, challenger_id, escrow_id, due_date, status, result,
     yes_total, no_total, yes_count, no_count)
SELECT 'bench ' || i, '', 'bench', %(challenger)s, id,
       -- the first `due` are past their deadline; the rest spread over the coming days
       CASE WHEN i <= %(due)s THEN %(now)s - (i %% 60) * interval '1 second'
            ELSE %(now)s + interval '2 hours' + (i %% 10000) * interval '1 minute' END,
       -- one in ten never got a second side: the sweep cancels those
       CASE WHEN i %% 10 = 0 THEN 'pending' ELSE 'active' END,
       '', 0, 0, 0, 0
FROM numbered
RETURNING id
"""

_USERS_SQL = """
INSERT INTO auth_user
    (password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
     date_joined)
SELECT '!', false, 'bench-' || %(tag)s || '-' || i, '', '', '', false, true, %(now)s
FROM generate_series(1, %(count)s) AS i
RETURNING id
"""

_STAKES_SQL = """
INSERT INTO challenges_stake (challenge_id, user_id, side, amount)
SELECT %(challenge)s, id, CASE WHEN id %% 2 = 0 THEN 'yes' ELSE 'no' END, 1
FROM auth_user WHERE id = ANY(%(users)s)
"""


def _seconds_since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _run_tag() -> str:
    """A fresh suffix for the run's user names: a run that died before its clean-up leaves
    rows behind, and the next run must not trip over their names."""
    return secrets.token_hex(4)


def _bench_user(tag: str, **flags: bool) -> Any:
    return user_create(
        username=f"bench-{tag}", password=secrets.token_urlsafe(), validate=False, **flags
    )


class _DatabaseWork:
    """What PostgreSQL did while the block ran: WAL bytes inserted (every session's, so run it
    on a quiet database) and the CPU time of this connection's server process when the server
    runs on this host (None otherwise). Both hold on any machine in a way seconds do not: WAL
    bytes do not depend on speed at all, CPU time not on the load of other processes."""

    def __enter__(self) -> "_DatabaseWork":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), pg_current_wal_insert_lsn()")
            self._pid, self._lsn = cursor.fetchone()
        self._cpu = process_cpu(self._pid)
        return self

    def __exit__(self, *exc: object) -> None:
        cpu = process_cpu(self._pid)
        self.cpu_s = None if cpu is None or self._cpu is None else cpu - self._cpu
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", [self._lsn])
            self.wal_bytes = int(cursor.fetchone()[0])

    def per(self, rows: int) -> dict[str, Any]:
        return {
            "wal_bytes_per_row": round(self.wal_bytes / rows) if rows else None,
            "db_cpu_us_per_row": (
                round(self.cpu_s * 1e6 / rows) if rows and self.cpu_s is not None else None
            ),
        }


def _index_entries(*, kind: str, challenge_ids: Iterable[int]) -> int | None:
    """Index entries one notification of ``kind`` about these challenges holds: one per index
    on the table with no predicate or with one the row meets (a warning, keyless, has no
    entry in the dedup key's)."""
    table = Notification._meta.db_table
    row = Notification.objects.filter(kind=kind, challenge_id__in=challenge_ids).first()
    if row is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indrelid = %s::regclass",
            [table],
        )
        predicates = [predicate for (predicate,) in cursor.fetchall()]
        entries = 0
        for predicate in predicates:
            cursor.execute(
                f"SELECT EXISTS (SELECT FROM {table} WHERE id = %s AND ({predicate or 'true'}))",  # noqa: S608
                [row.pk],
            )
            entries += cursor.fetchone()[0]
    return entries


def _bench_rows_delete(*, challenger_id: int, user_ids: list[int]) -> None:
    """Delete what a run committed: its challenges with their stakes, warning marks,
    notifications, refund jobs (none: nothing was staked on them) and escrow accounts, then its
    users and wallets."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_challenges ON COMMIT DROP AS "
            "SELECT id, escrow_id FROM challenges_challenge WHERE challenger_id = %s",
            [challenger_id],
        )
        cursor.execute("ANALYZE bench_challenges")
        for statement in (
            "DELETE FROM notifications_notification AS n USING bench_challenges AS b "
            "WHERE n.challenge_id = b.id",
            "DELETE FROM challenges_stake AS s USING bench_challenges AS b "
            "WHERE s.challenge_id = b.id",
            "DELETE FROM challenges_deadlinewarning AS w USING bench_challenges AS b "
            "WHERE w.challenge_id = b.id",
            "DELETE FROM challenges_challenge AS c USING bench_challenges AS b WHERE c.id = b.id",
            "DELETE FROM payouts_account AS a USING bench_challenges AS b WHERE a.id = b.escrow_id",
        ):
            cursor.execute(statement)
        for table in ("notifications_notification", "payouts_account"):
            cursor.execute(f"DELETE FROM {table} WHERE user_id = ANY(%s)", [user_ids])  # noqa: S608
        cursor.execute("DELETE FROM auth_user WHERE id = ANY(%s)", [user_ids])


def _per_row_sweep(*, now: datetime, staff_ids: list[int]) -> float:
    """The source documents' loop over a sample: find the due rows, then per challenge one
    UPDATE and one notification INSERT per staff member. Rolled back; returns rows/s."""
    with transaction.atomic(), connection.cursor() as cursor:
        start = time.perf_counter()
        cursor.execute(
            "SELECT id FROM challenges_challenge WHERE status = 'active' AND due_date <= %s "
            "LIMIT %s",
            [now, BASELINE_SAMPLE],
        )
        ids = [row[0] for row in cursor.fetchall()]
        for challenge_id in ids:
            cursor.execute(
                "UPDATE challenges_challenge SET status = 'pending_admin' WHERE id = %s",
                [challenge_id],
            )
            for staff_id in staff_ids:
                cursor.execute(
                    "INSERT INTO notifications_notification (user_id, kind, challenge_id, title,"
                    " body, priority, data, dedup_key) VALUES (%s, 'needs_resolution', %s, 't',"
                    " '', 'normal', '{}', %s)",
                    [staff_id, challenge_id, f"baseline:{challenge_id}:{staff_id}"],
                )
        elapsed = time.perf_counter() - start
        transaction.set_rollback(True)
    return round(len(ids) / elapsed) if ids else 0


def bench_sweep(*, challenges: int = 1_000_000, due: int = 10_000) -> dict[str, Any]:
    """Time one beat tick of the deadline sweep over ``challenges`` open challenges of which
    ``due`` expired (one in ten of those never got a second side and is cancelled), with two
    staff users to tell."""
    now = timezone.now()
    tag = _run_tag()
    with transaction.atomic():
        challenger = _bench_user(f"challenger-{tag}")
        staff_ids = [_bench_user(f"staff{i}-{tag}", is_staff=True).pk for i in range(2)]
    user_ids = [challenger.pk, *staff_ids]
    try:
        start = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _CHALLENGES_SQL,
                {
                    "currency": settings.CURRENCY,
                    "count": challenges,
                    "challenger": challenger.pk,
                    "due": due,
                    "now": now,
                },
            )
            # Fresh statistics before the commit runs the escrows' foreign-key checks (see
            # bench_warnings).
            cursor.execute("ANALYZE payouts_account")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE challenges_challenge")
        build_s = _seconds_since(start)
        baseline_rate = _per_row_sweep(now=now, staff_ids=staff_ids)

        with queries_captured() as queries, _DatabaseWork() as work:
            start = time.perf_counter()
            challenges_sweep_deadlines_task()
            sweep_s = _seconds_since(start)
        start = time.perf_counter()
        challenges_sweep_deadlines_task()
        idle_ms = round((time.perf_counter() - start) * 1000, 2)

        mine = Challenge.objects.filter(challenger_id=challenger.pk)
        pending_admin = mine.filter(status=Challenge.Status.PENDING_ADMIN).count()
        cancelled = mine.filter(status=Challenge.Status.CANCELLED).count()
        notifications = Notification.objects.filter(challenge__challenger_id=challenger.pk).count()
        # Every active staff user is told of each challenge awaiting a result, not only the
        # bench's two: the figure per due challenge depends on this count.
        staff_users = get_user_model().objects.filter(is_staff=True, is_active=True).count()
        index_entries = _index_entries(
            kind="needs_resolution", challenge_ids=mine.values_list("id", flat=True)
        )
        if (pending_admin, cancelled) != (due - due // 10, due // 10):
            raise RuntimeError(f"the sweep moved {pending_admin} + {cancelled}, not {due}")
    finally:
        _bench_rows_delete(challenger_id=challenger.pk, user_ids=user_ids)
    moved = pending_admin + cancelled
    return {
        "challenges": challenges,
        "due": due,
        "build_s": build_s,
        "sweep_s": sweep_s,
        "moved_to_pending_admin": pending_admin,
        "cancelled": cancelled,
        "notifications_created": notifications,
        "staff_users": staff_users,
        "notifications_per_due_challenge": round(notifications / moved, 2) if moved else None,
        "queries": len(queries),
        "challenges_per_s": round(moved / sweep_s) if sweep_s else None,
        "idle_sweep_ms": idle_ms,
        "baseline_per_row_challenges_per_s": baseline_rate,
        "wal_bytes_per_due_challenge": round(work.wal_bytes / moved) if moved else None,
        "db_cpu_us_per_due_challenge": work.per(moved)["db_cpu_us_per_row"],
        "notification_index_entries": index_entries,
        "delivery_tasks": -(-notifications // DELIVERY_CHUNK),
    }


def _per_row_warnings(*, challenge_id: int, user_ids: list[int]) -> float:
    """The source documents' loop over a sample: per participant, look for a warning in the
    last 30 minutes, then insert one. Rolled back; returns participants/s."""
    sample = user_ids[:BASELINE_SAMPLE]
    with transaction.atomic(), connection.cursor() as cursor:
        start = time.perf_counter()
        for user_id in sample:
            cursor.execute(
                "SELECT 1 FROM notifications_notification WHERE user_id = %s AND challenge_id = %s"
                " AND created_at > now() - interval '30 minutes'",
                [user_id, challenge_id],
            )
            if cursor.fetchone() is None:
                cursor.execute(
                    "INSERT INTO notifications_notification (user_id, kind, challenge_id, title,"
                    " body, priority, data, dedup_key) VALUES (%s, 'deadline_10m', %s, 't', '',"
                    " 'high', '{}', %s)",
                    [user_id, challenge_id, f"baseline:{challenge_id}:{user_id}"],
                )
        elapsed = time.perf_counter() - start
        transaction.set_rollback(True)
    return round(len(sample) / elapsed) if sample else 0


def bench_warnings(*, participants: int = 100_000) -> dict[str, Any]:
    """Time one beat tick of the 10-minute warning fan-out to one challenge's
    ``participants`` (the challenger plus ``participants - 1`` stakers)."""
    now = timezone.now()
    tag = _run_tag()
    with transaction.atomic():
        challenger = _bench_user(f"warn-challenger-{tag}")
    user_ids = [challenger.pk]
    try:
        start = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _CHALLENGES_SQL,
                {
                    "currency": settings.CURRENCY,
                    "count": 1,
                    "challenger": challenger.pk,
                    "due": 0,
                    "now": now,
                },
            )
            challenge_id = cursor.fetchone()[0]
            # Five minutes left: inside the 10-minute window for the whole run.
            cursor.execute(
                "UPDATE challenges_challenge SET due_date = %s WHERE id = %s",
                [now + timedelta(minutes=5), challenge_id],
            )
            cursor.execute(_USERS_SQL, {"tag": tag, "now": now, "count": participants - 1})
            user_ids += [row[0] for row in cursor.fetchall()]
            # Fresh statistics before the commit runs the stakes' foreign-key checks: planned
            # against a near-empty user table (a clean database, or the last run's clean-up),
            # each check would scan the whole table.
            cursor.execute("ANALYZE auth_user")
            cursor.execute(_STAKES_SQL, {"challenge": challenge_id, "users": user_ids[1:]})
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE challenges_stake")
        build_s = _seconds_since(start)
        baseline_rate = _per_row_warnings(challenge_id=challenge_id, user_ids=user_ids[1:])

        with queries_captured() as queries, _DatabaseWork() as work:
            start = time.perf_counter()
            created = challenges_send_deadline_warnings_task()
            fan_out_s = _seconds_since(start)
        with _DatabaseWork() as repeat_work:
            start = time.perf_counter()
            again = challenges_send_deadline_warnings_task()
            repeat_s = _seconds_since(start)
        if again:
            raise RuntimeError("a repeated scan created warnings again")
        index_entries = _index_entries(kind="deadline_10m", challenge_ids=[challenge_id])
    finally:
        _bench_rows_delete(challenger_id=challenger.pk, user_ids=user_ids)
    return {
        "participants": participants,
        "build_s": build_s,
        "fan_out_s": fan_out_s,
        "notifications_created": created,
        "queries": len(queries),
        "notifications_per_s": round(created / fan_out_s) if fan_out_s else None,
        "delivery_tasks": -(-created // DELIVERY_CHUNK),
        "repeat_scan_s": repeat_s,
        "baseline_per_row_notifications_per_s": baseline_rate,
        **work.per(created),
        "repeat_scan_db_cpu_us_per_participant": repeat_work.per(participants)["db_cpu_us_per_row"],
        "notification_index_entries": index_entries,
    }
