"""The watchdog runs every minute for the platform's whole life: what it reads must not grow
with the jobs and challenges the platform has finished. Each statement it makes reads its
tables by index among 20,000 finished jobs (one in a hundred cancelled), their challenges and
their entries."""

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payouts.services.watchdog import payout_watchdog

pytestmark = pytest.mark.django_db

HISTORY = 20_000
# Tables whose rows pile up with history.
GROWING = ("payouts_payoutjob", "challenges_challenge", "payouts_payoutentry")

# Challenges resolved or cancelled days ago, each with its finished job (one in a hundred
# cancelled by staff) and the job's two entries, one paid and one cancelled.
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


def _scans(sql: str, params) -> dict[str, str]:
    """How the plan of ``sql`` reads each growing table: table -> node type."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        nodes = [cursor.fetchone()[0][0]["Plan"]]
    scans = {}
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") in GROWING:
            scans[node["Relation Name"]] = node["Node Type"]
        nodes.extend(node.get("Plans", []))
    return scans


def test_the_watchdog_reads_no_growing_table_in_full(make_user):
    # Given 20,000 finished jobs and their challenges
    user, other = make_user(), make_user()
    with connection.cursor() as cursor:
        cursor.execute(
            _HISTORY_SQL,
            {"currency": settings.CURRENCY, "user": user.pk, "other": other.pk, "count": HISTORY},
        )
        # The planner told about them, as autovacuum would.
        cursor.execute(f"ANALYZE {', '.join(GROWING)}")
    # When the watchdog makes its minute's pass
    with CaptureQueriesContext(connection) as captured:
        report = payout_watchdog()
    # Then there was nothing to do
    assert (report.expansions, report.restarted, report.cancelled_entries) == ([], [], 0)
    # And no statement of it read a growing table from end to end
    plans = {}
    for query in captured.captured_queries:
        sql = query["sql"]
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
            plans[sql] = _scans(sql, None)
    assert any(plans.values()), plans
    full_reads = {
        sql[:160]: table
        for sql, scans in plans.items()
        for table, how in scans.items()
        if how == "Seq Scan"
    }
    assert full_reads == {}
