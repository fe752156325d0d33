"""Resolve latency as staff see it: ``POST /api/admin/challenges/{id}/resolve/`` in process.

A challenge resolves once, so each sample is followed by an undo of exactly what resolving
wrote (the job row, its audit entry, the challenge's result), which brings the same challenge
back to ``pending_admin``; this is what lets one challenge of a million stakers give a p99.
The undo runs only in this benchmark's own database, between samples and outside the timing.
The expansion messages the samples sent are purged afterwards, before any worker starts.

"""

import statistics
import time
from typing import Any

from django.db import connection, transaction
from rest_framework.test import APIClient

from config.celery import app
from core.models import AuditEntry
from payouts.models import PayoutJob
from payouts.services.engine import EXPAND_TASK
from proof.figures import percentile
from proof.queries import queries_captured
from users.services import token_create

_UNDO_CHALLENGE = """
UPDATE challenges_challenge
SET status = 'pending_admin', result = '', resolved_at = NULL, resolved_by_id = NULL
WHERE id = %s
"""


def _undo(challenge_id: int) -> None:
    with transaction.atomic():
        job = PayoutJob.objects.get(challenge_id=challenge_id)
        AuditEntry.objects.filter(
            action="challenge.resolve", target_type="challenge", target_id=str(challenge_id)
        ).delete()
        job.delete()
        with connection.cursor() as cursor:
            cursor.execute(_UNDO_CHALLENGE, [challenge_id])


def _expansions_purge() -> None:
    """Drop the expansion messages of the undone jobs from the queue they were routed to."""
    queue = app.amqp.router.route({}, EXPAND_TASK)["queue"].name
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def resolve_latency(*, challenge_id: int, staff: Any, samples: int) -> dict[str, float]:
    """Time ``samples`` resolves of one challenge through the API; p50/p99 in milliseconds,
    and the number of queries one resolve issues (the same for any number of stakers).

    One resolve runs first, outside the samples, and is reported apart (``warmup_ms``): a
    process's first request pays for what Django and DRF set up on first use (middleware, URL
    patterns, the statements' preparation), tens to hundreds of milliseconds against about 10
    for the next ones, and the p99 of 30 samples is their highest, so it was that request's.
    """
    # A host the settings allow (the test client's default "testserver" is not one).
    client = APIClient(HTTP_HOST="localhost")
    # Signed in as staff are: by token, whose lookup is one of the resolve's queries.
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=staff)[0]}")
    url = f"/api/admin/challenges/{challenge_id}/resolve/"

    def resolve() -> tuple[float, list[dict[str, str]]]:
        with queries_captured() as captured:
            started = time.perf_counter()
            response = client.post(url, {"result": "challenger_won"}, format="json")
            elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 202:
            raise RuntimeError(f"resolve answered {response.status_code}: {response.content!r}")
        _undo(challenge_id)
        return elapsed, captured.captured_queries

    warmup_ms, _ = resolve()
    timings: list[float] = []
    # Per statement of the resolve, by the start of its text: each sample's time.
    statements: dict[str, list[float]] = {}
    queries = 0
    for _ in range(samples):
        elapsed, captured_queries = resolve()
        timings.append(elapsed)
        queries = len(captured_queries)
        for query in captured_queries:
            sql = " ".join(query["sql"].split())[:60]
            statements.setdefault(sql, []).append(float(query["time"]) * 1000)
    _expansions_purge()
    return {
        "samples": samples,
        "p50_ms": round(percentile(timings, 0.5), 2),
        "p99_ms": round(percentile(timings, 0.99), 2),
        "mean_ms": round(statistics.fmean(timings), 2),
        "warmup_ms": round(warmup_ms, 2),
        "queries": queries,
        # Django times a statement to the millisecond: enough to see which one waits.
        "statements": [
            {
                "sql": sql,
                "runs": len(times),
                "p50_ms": percentile(times, 0.5),
                "p99_ms": percentile(times, 0.99),
            }
            for sql, times in statements.items()
        ],
    }
