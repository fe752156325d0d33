"""Beat's every-minute tasks, and the pages opened most, run for the platform's whole life:
what they read must not grow with the challenges, stakes, jobs, entries and notifications the
platform has finished. Among 20,000 of each, every statement each task or page makes reads
those tables by index or not at all."""

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from challenges.services import challenges_send_deadline_warnings, challenges_sweep_deadlines
from notifications.services import notifications_redeliver_stale
from payouts.models import PayoutJob
from payouts.services.alerts import ops_alerts_check
from payouts.services.watchdog import payout_watchdog
from tests.plans import plan_reads
from users.services import user_create

pytestmark = pytest.mark.django_db

HISTORY = 20_000
# Tables whose rows pile up with history.
GROWING = (
    "challenges_challenge",
    "challenges_stake",
    "challenges_deadlinewarning",
    "payouts_payoutjob",
    "payouts_payoutentry",
    "notifications_notification",
)

# Challenges resolved or cancelled days ago, each with a stake, its two deadline warnings'
# marks, its finished job (one in a hundred cancelled by staff), the job's two entries (one
# paid, one cancelled) and a delivered notification (to the other user: a user's own
# notifications are a small part of everyone's, and the user whose pages are opened must not
# own the whole table).
_HISTORY_SQL = """
WITH escrow AS (
    INSERT INTO payouts_account (kind, currency, balance)
    SELECT 'challenge_escrow', %(currency)s, 0 FROM generate_series(1, %(count)s)
    RETURNING id
), challenge AS (
    INSERT INTO challenges_challenge
        (title, description, category, challenger_id, escrow_id, due_date, status, result,
         yes_total, no_total, yes_count, no_count)
    SELECT 'old', '', '', %(user)s, id, now() - interval '3 days',
           CASE WHEN id %% 100 = 0 THEN 'cancelled' ELSE 'completed' END, '', 0, 0, 0, 0
    FROM escrow
    RETURNING id, status
), stake AS (
    INSERT INTO challenges_stake (challenge_id, user_id, side, amount)
    SELECT id, %(user)s, 'yes', 1 FROM challenge
), warned AS (
    INSERT INTO challenges_deadlinewarning (challenge_id, kind, last_stake_id, created_at)
    SELECT c.id, k.kind, 0, now() - interval '3 days'
    FROM challenge AS c CROSS JOIN (VALUES ('deadline_1h'), ('deadline_10m')) AS k (kind)
), notification AS (
    INSERT INTO notifications_notification
        (user_id, kind, challenge_id, title, body, priority, data, dedup_key, created_at,
         delivered_at)
    SELECT %(other)s, 'payout_completed', id, 'Paid', '', 'normal', '{}', 'history:' || id,
           now() - interval '2 days', now() - interval '2 days'
    FROM challenge
), job AS (
    INSERT INTO payouts_payoutjob
        (challenge_id, kind, rail, status, winning_side, fee_bps, batch_size, parallelism,
         total_entries, completed_count, failed_count, cancelled_count, total_amount,
         paid_amount, fee_amount, created_at, started_at, finished_at, updated_at)
    SELECT id, 'refund', 'ledger', status, '', 0, 10000, 1, 2, 1, 0, 1, 2, 1, 0,
           now() - interval '3 days', now() - interval '3 days', now() - interval '2 days',
           now() - interval '2 days'
    FROM challenge
    RETURNING id
)
INSERT INTO payouts_payoutentry
    (job_id, user_id, stake_amount, amount, status, attempt_count, failure_reason, last_error,
     stripe_transfer_id, completed_at)
SELECT job.id, u.id, 1, 1, u.status, 0, '', '', '', now() - interval '2 days'
FROM job CROSS JOIN (VALUES (%(user)s, 'completed'), (%(other)s, 'cancelled')) AS u (id, status)
"""

# Each of beat's every-minute tasks (challenges/0002, payouts/0009), as the service it calls.
MINUTE_TASKS: dict[str, Callable[[], object]] = {
    "sweep": challenges_sweep_deadlines,
    "warnings": challenges_send_deadline_warnings,
    "watchdog": payout_watchdog,
    "redelivery": notifications_redeliver_stale,
    "alerts": ops_alerts_check,
}


@pytest.fixture
def history(make_user) -> dict[str, Any]:
    """The history, and what a page about it needs: the user who took part in all of it,
    its newest challenge and that challenge's job."""
    user, other = make_user(), make_user()
    with connection.cursor() as cursor:
        cursor.execute(
            _HISTORY_SQL,
            {"currency": settings.CURRENCY, "user": user.pk, "other": other.pk, "count": HISTORY},
        )
        # The planner told about them, as autovacuum would.
        cursor.execute(f"ANALYZE {', '.join(GROWING)}")
    job = PayoutJob.objects.order_by("-id").first()
    return {"user": user, "challenge": job.challenge_id, "job": job.pk}


def _scans(sql: str) -> dict[str, str]:
    """How the plan of ``sql`` reads each growing table: table -> node type."""
    return {table: how for table, how in plan_reads(sql) if table in GROWING}


def _full_reads(captured: CaptureQueriesContext) -> dict[str, str]:
    """The statements ``captured`` that read a growing table from end to end: the start of
    each one -> that table."""
    plans = {
        query["sql"]: _scans(query["sql"])
        for query in captured.captured_queries
        if query["sql"].lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "INSERT"))
    }
    assert any(plans.values()), plans
    return {
        sql[:160]: table
        for sql, scans in plans.items()
        for table, how in scans.items()
        if how == "Seq Scan"
    }


@pytest.mark.parametrize("task", MINUTE_TASKS)
def test_a_minute_task_reads_no_growing_table_in_full(history, task):
    # When the task makes its minute's pass over the history (nothing in it is due)
    with CaptureQueriesContext(connection) as captured:
        MINUTE_TASKS[task]()
    # Then no statement it made read a growing table from end to end
    assert _full_reads(captured) == {}


# The pages staff and users open most about one thing, or about what is open now. (Lists of a
# whole table are the admin's, whose counts have their own test: tests/core/test_admin_counts.)
PAGES = {
    "staff console": ("staff", "/admin/"),
    "job page": ("staff", "/admin/payouts/payoutjob/{job}/change/"),
    "challenge page": ("staff", "/admin/challenges/challenge/{challenge}/change/"),
    "challenge list": ("user", "/api/challenges/"),
    "open challenges": ("user", "/api/challenges/?status=active"),
    "challenge": ("user", "/api/challenges/{challenge}/"),
    "notifications": ("user", "/api/notifications/"),
}


@pytest.mark.parametrize("page", PAGES)
def test_a_page_reads_no_growing_table_in_full(history, page):
    who, url = PAGES[page]
    client = Client()
    if who == "staff":
        boss = user_create(username="boss", password="pw-1-boss", is_superuser=True, validate=False)
        client.force_login(boss)
    else:
        client.force_login(history["user"])
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url.format(**history))
    assert response.status_code == 200
    assert _full_reads(captured) == {}
