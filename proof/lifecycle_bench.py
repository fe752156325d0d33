"""Benchmarks of the deadline sweep and the warning fan-out (not tests; ``manage.py
bench_lifecycle`` prints them, and the project-wide ``manage.py bench`` calls the same functions).

Each function builds its data set-based in SQL inside one transaction, times the real service
against it, and rolls everything back, so it can run against a development database without
leaving rows behind (nothing is enqueued either: delivery is scheduled on commit). Next to
each figure it measures, in the same run and on the same data, the per-row baseline of the
source documents: one statement per challenge (or per participant) from a Python loop.
"""

import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from challenges.services import challenges_send_deadline_warnings, challenges_sweep_deadlines
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


def _bench_user(tag: str, **flags: bool) -> Any:
    return user_create(
        username=f"bench-{tag}", password=secrets.token_urlsafe(), validate=False, **flags
    )


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
    """Time one deadline sweep over ``challenges`` open challenges of which ``due`` expired."""
    now = timezone.now()
    with transaction.atomic():
        challenger = _bench_user("challenger")
        staff_ids = [_bench_user(f"staff{i}", is_staff=True).pk for i in range(2)]
        start = time.perf_counter()
        with connection.cursor() as cursor:
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
            cursor.execute("ANALYZE challenges_challenge")
        build_s = _seconds_since(start)
        baseline_rate = _per_row_sweep(now=now, staff_ids=staff_ids)

        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            result = challenges_sweep_deadlines(now=now)
            sweep_s = _seconds_since(start)
        start = time.perf_counter()
        idle = challenges_sweep_deadlines(now=now)
        idle_ms = round((time.perf_counter() - start) * 1000, 2)
        if idle.pending_admin or idle.cancelled:
            raise RuntimeError("a second sweep moved challenges again")
        transaction.set_rollback(True)
    moved = len(result.pending_admin) + len(result.cancelled)
    return {
        "challenges": challenges,
        "due": due,
        "build_s": build_s,
        "sweep_s": sweep_s,
        "moved_to_pending_admin": len(result.pending_admin),
        "cancelled": len(result.cancelled),
        "notifications_created": result.notifications,
        "queries": len(queries),
        "challenges_per_s": round(moved / sweep_s) if sweep_s else None,
        "idle_sweep_ms": idle_ms,
        "baseline_per_row_challenges_per_s": baseline_rate,
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
    """Time the 10-minute warning fan-out to one challenge's ``participants`` (the challenger
    plus ``participants - 1`` stakers)."""
    from notifications.services import DELIVERY_CHUNK

    now = timezone.now()
    due_date = now + timedelta(minutes=5)
    with transaction.atomic():
        challenger = _bench_user("warn-challenger")
        start = time.perf_counter()
        with connection.cursor() as cursor:
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
            cursor.execute(
                "UPDATE challenges_challenge SET due_date = %s WHERE id = %s",
                [due_date, challenge_id],
            )
            cursor.execute(_USERS_SQL, {"tag": "warn", "now": now, "count": participants - 1})
            user_ids = [row[0] for row in cursor.fetchall()]
            cursor.execute(_STAKES_SQL, {"challenge": challenge_id, "users": user_ids})
            cursor.execute("ANALYZE challenges_stake")
        build_s = _seconds_since(start)
        baseline_rate = _per_row_warnings(challenge_id=challenge_id, user_ids=user_ids)

        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            created = challenges_send_deadline_warnings(now=now)
            fan_out_s = _seconds_since(start)
        start = time.perf_counter()
        again = challenges_send_deadline_warnings(now=now)
        repeat_s = _seconds_since(start)
        if again:
            raise RuntimeError("a repeated scan created warnings again")
        transaction.set_rollback(True)
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
    }
