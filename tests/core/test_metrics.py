"""``/metrics``: closed to the public, and every figure the README lists, scraped and parsed
with prometheus_client's own text parser."""

import logging
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app as celery_app
from payouts.models import PayoutJob
from payouts.services.jobs import challenge_resolve
from payouts.services.stripe_client import transfer_create
from proof.seeding import challenge_seed
from tests.conftest import wait_for
from tests.payouts.helpers import run_job_inline

TOKEN = "scrape-token-for-tests"


@pytest.fixture(autouse=True)
def _fresh_shared_state(settings, redis_client):
    """Counters and heartbeats of earlier tests (they live in Redis) do not count here."""
    settings.METRICS_TOKEN = TOKEN
    for pattern in ("metrics:*", "workers:queue:*"):
        for key in redis_client.scan_iter(pattern):
            redis_client.delete(key)


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, keyed by (sample name, its labels)."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain;")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def test_no_token_configured_means_no_endpoint(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 404


def test_a_scrape_without_the_token_is_refused(client):
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["code"] == "not_authenticated"
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "permission_denied"
    # A token in another scheme is no bearer token.
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 401


def http_counts(samples: dict) -> dict[tuple[str, str], float]:
    """Requests by (view, status), and latency observations by (view, "latency"), each summed
    over the methods (a view an earlier test called with another method has one sample per
    method)."""
    counts: dict[tuple[str, str], float] = {}
    for (name, labels), v in samples.items():
        labels = dict(labels)
        if name == "django_http_responses_total_by_status_view_method_total":
            key = (labels["view"], labels["status"])
        elif name == "django_http_requests_latency_seconds_by_view_method_count":
            key = (labels["view"], "latency")
        else:
            continue
        counts[key] = counts.get(key, 0) + v
    return counts


@pytest.mark.django_db
def test_http_requests_are_counted_by_view_status_and_latency(client):
    # The HTTP metrics live in this process's memory: compare two scrapes.
    before = http_counts(scrape(client))
    for _ in range(3):
        client.get("/healthz")
    client.get("/api/challenges/")  # anonymous: 401 from the challenges view

    after = http_counts(scrape(client))

    changed = {key: after[key] - before.get(key, 0) for key in after}
    changed = {key: n for key, n in changed.items() if n and key[0] != "metrics"}
    assert changed == {
        ("healthz", "200"): 3,
        ("healthz", "latency"): 3,
        ("challenges", "401"): 1,
        ("challenges", "latency"): 1,
    }


@pytest.mark.django_db
def test_queue_depth_and_oldest_message_age_without_any_worker(client, redis_client):
    redis_client.delete("default", "notifications")
    current_app.send_task("tests.slow", args=["metrics", 0], queue="default")
    current_app.send_task("tests.slow", args=["metrics", 0], queue="default")

    samples = scrape(client)
    assert value(samples, "stakehold_broker_up") == 1
    assert value(samples, "stakehold_queue_messages", queue="default") == 2
    assert value(samples, "stakehold_queue_messages", queue="notifications") == 0
    assert 0 <= value(samples, "stakehold_queue_oldest_message_age_seconds", queue="default") < 30
    assert value(samples, "stakehold_queue_workers", queue="default") == 0
    redis_client.delete("default")


@pytest.mark.django_db
def test_queue_depth_counts_messages_of_every_priority(client, redis_client):
    from core.queues import queue_lists

    # Given messages at the payouts queue's priorities (one Redis list per priority step)
    redis_client.delete(*queue_lists("default"))
    for priority in (0, 3, 6):
        current_app.send_task("tests.slow", args=["metrics", 0], queue="default", priority=priority)
    # Then the queue's depth and age cover all of them
    samples = scrape(client)
    assert value(samples, "stakehold_queue_messages", queue="default") == 3
    assert 0 <= value(samples, "stakehold_queue_oldest_message_age_seconds", queue="default") < 30
    redis_client.delete(*queue_lists("default"))


@pytest.mark.django_db
def test_broker_down_is_a_metric_not_a_failed_scrape(client, settings, monkeypatch):
    from core import queues

    queues._redis.cache_clear()
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    try:
        samples = scrape(client)
    finally:
        queues._redis.cache_clear()
    assert value(samples, "stakehold_broker_up") == 0
    # The rest of the scrape is still there.
    assert value(samples, "stakehold_payout_jobs_active", status="running") == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_heartbeats_task_outcomes_and_dead_letters(client, workers):
    # Given a worker on the default queue and a task that fails transiently every time
    workers.start("default")
    samples = wait_for(
        lambda: (
            (s := scrape(client))
            and value(s, "stakehold_queue_workers", queue="default") == 1
            and s
        ),
        timeout=60,
    )
    assert value(samples, "stakehold_queue_workers", queue="payouts") == 0

    # When it has used up its retries (TASK_MAX_RETRIES=4 for test workers)
    celery_app.send_task("tests.always_transient", args=["metrics-dl"])
    samples = wait_for(
        lambda: (
            (s := scrape(client))
            and value(s, "stakehold_dead_letters_open", task="tests.always_transient") == 1
            and value(s, "stakehold_tasks_total", task="tests.always_transient", state="failure")
            and s
        ),
        timeout=60,
    )

    # Then each run is counted by outcome, and the dead letter twice: recorded and open
    assert (
        value(samples, "stakehold_tasks_total", task="tests.always_transient", state="retry") == 4
    )
    assert (
        value(samples, "stakehold_tasks_total", task="tests.always_transient", state="failure") == 1
    )
    assert (
        value(samples, "stakehold_dead_letters_recorded_total", task="tests.always_transient") == 1
    )


@pytest.mark.django_db
def test_stripe_calls_by_outcome_and_the_rate_limiter_wait(client, fake_stripe, caplog):
    fake_stripe.accounts_put([{"id": "acct_metrics", "payouts_enabled": True}])
    caplog.set_level(logging.INFO, logger="payouts.services.stripe_client")

    paid = transfer_create(
        entry_id=901, job_id=9, amount=250, currency="usd", destination="acct_metrics"
    )
    refused = transfer_create(
        entry_id=902, job_id=9, amount=250, currency="usd", destination="acct_unknown"
    )
    fake_stripe.configure(faults={"server_error": 1.0})
    unavailable = transfer_create(
        entry_id=903, job_id=9, amount=250, currency="usd", destination="acct_metrics"
    )

    assert (paid.outcome, refused.outcome, unavailable.outcome) == (
        "paid",
        "permanent",
        "transient",
    )
    samples = scrape(client)
    for outcome in ("ok", "permanent", "transient"):
        assert (
            value(
                samples,
                "stakehold_stripe_requests_total",
                operation="transfer_create",
                outcome=outcome,
            )
            == 1
        )
    assert value(samples, "stakehold_stripe_ratelimit_wait_seconds_count") == 3
    assert value(samples, "stakehold_stripe_ratelimit_wait_seconds_bucket", le="+Inf") == 3
    assert value(samples, "stakehold_stripe_ratelimit_wait_seconds_sum") >= 0

    # One INFO line per request with ids and the outcome, and nothing secret.
    lines = [r for r in caplog.records if r.name == "payouts.services.stripe_client"]
    assert [(r.levelno, r.stripe_outcome) for r in lines] == [
        (logging.INFO, "ok"),
        (logging.INFO, "permanent"),
        (logging.INFO, "transient"),
    ]
    assert lines[0].entry_id == 901
    assert lines[0].stripe_transfer_id == paid.transfer_id
    assert lines[2].stripe_reason == "stripe_unavailable"
    for record in lines:
        rendered = logging.Formatter().format(record) + repr(vars(record))
        assert fake_stripe.env()["STRIPE_API_KEY"] not in rendered


# Transactional: the counters are bumped when the work commits, as in production.
@pytest.mark.django_db(transaction=True)
def test_payouts_paid_by_rail_and_jobs_by_state(client, staff, settings):
    settings.PAYOUT_BATCH_SIZE = 4
    # Given a paid job, and another one only queued
    paid_challenge = challenge_seed(stakers=10, yes_share=0.5, seed=31)
    job = challenge_resolve(challenge_id=paid_challenge.pk, result="challenger_won", actor=staff)
    run_job_inline(job.pk)
    job.refresh_from_db()
    queued_challenge = challenge_seed(stakers=4, yes_share=0.5, seed=32)
    challenge_resolve(challenge_id=queued_challenge.pk, result="draw", actor=staff)

    samples = scrape(client)

    assert job.status == PayoutJob.Status.COMPLETED
    paid = value(samples, "stakehold_payout_entries_paid_total", rail="ledger")
    assert paid == job.completed_count
    assert value(samples, "stakehold_payout_amount_paid_total", rail="ledger") == job.paid_amount
    assert value(samples, "stakehold_payout_jobs_finished_total", status="completed") == 1
    assert value(samples, "stakehold_payout_jobs_active", status="queued") == 1
    assert value(samples, "stakehold_payout_jobs_active", status="running") == 0


@pytest.mark.django_db
def test_seconds_since_each_periodic_task_last_ran(client):
    # Given the watchdog last sent 90 seconds ago (the schedule comes from the migrations)
    PeriodicTask.objects.filter(task="payouts.tasks.payout_watchdog_task").update(
        last_run_at=timezone.now() - timedelta(seconds=90)
    )

    samples = scrape(client)

    watchdog = {"name": "payouts: watchdog", "task": "payouts.tasks.payout_watchdog_task"}
    assert 89 <= value(samples, "stakehold_periodic_task_seconds_since_last_run", **watchdog) < 120
    assert value(samples, "stakehold_periodic_task_interval_seconds", **watchdog) == 60
    retention = {"name": "operations: retention", "task": "payouts.tasks.retention_run_task"}
    assert value(samples, "stakehold_periodic_task_interval_seconds", **retention) == 86_400
