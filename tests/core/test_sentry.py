"""Sentry as configured by the settings, proven against a local fake Sentry that the real
``sentry-sdk`` in real worker and beat processes sends its envelopes to."""

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery import app as celery_app
from core.sentry import FILTERED, event_scrub, release_default
from deploy.workers import ROOT
from tests.conftest import wait_for
from tests.fakes.sentry_server import FakeSentry


def test_the_scrubber_hides_secrets_at_any_depth():
    event = {
        "request": {
            "headers": {"Authorization": "Token abc", "X-Request-ID": "r-1"},
            "cookies": {"sessionid": "s"},
            "data": {"password": "hunter2", "amount": 500},
        },
        "extra": {
            "celery-job": {"args": [7], "kwargs": {"api_key": "sk_test_123", "note": "ok"}},
            "deep": [[{"nested": {"client_secret": "x", "fine": "y"}}]],
        },
        "exception": {
            "values": [
                {"value": "refused sk_live_4eC39HqLyjWDarjtT1zdp7dc and whsec_abc for you"},
                {"value": "could not reach postgres://app:s3cret@db:5432/app"},
                {"value": "header was Bearer eyJhbGciOi.x.y"},
            ]
        },
        "breadcrumbs": {"values": [{"message": "m", "data": {"card_number": "4242"}}]},
    }

    scrubbed = event_scrub(event, {})

    assert scrubbed["request"]["headers"] == {"Authorization": FILTERED, "X-Request-ID": "r-1"}
    assert scrubbed["request"]["cookies"] == FILTERED
    assert scrubbed["request"]["data"] == {"password": FILTERED, "amount": 500}
    assert scrubbed["extra"]["celery-job"]["kwargs"] == {"api_key": FILTERED, "note": "ok"}
    assert scrubbed["extra"]["deep"] == [[{"nested": {"client_secret": FILTERED, "fine": "y"}}]]
    values = [v["value"] for v in scrubbed["exception"]["values"]]
    assert values == [
        f"refused {FILTERED} and {FILTERED} for you",
        f"could not reach postgres://{FILTERED}@db:5432/app",
        f"header was {FILTERED}",
    ]
    assert scrubbed["breadcrumbs"]["values"][0]["data"] == {"card_number": FILTERED}


def test_the_release_defaults_to_the_package_version():
    assert release_default() == "stakehold@0.1.0"


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    fake = FakeSentry().start()
    yield fake
    fake.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_task_failure_arrives_scrubbed_with_its_tags(workers, fake_sentry):
    # Given a worker whose settings point Sentry at the fake
    workers.start("default", SENTRY_DSN=fake_sentry.dsn)

    # When a job task fails for good with a secret in its arguments, a log and its message
    celery_app.send_task(
        "tests.fails_with_secrets",
        args=[77],
        kwargs={"api_key": "sk_live_51Hsecretvalue", "card_number": "4242424242424242"},
    )

    # Then Sentry receives the error, tagged with the task, its queue and its job
    event = fake_sentry.wait_for(
        "event", lambda e: e.get("level") == "error" and "exception" in e, timeout=60
    )
    assert event["tags"]["task_name"] == "tests.fails_with_secrets"
    assert event["tags"]["queue"] == "default"
    assert event["tags"]["job_id"] == "77"
    assert event["tags"]["task_id"]
    assert event["release"] == "stakehold@0.1.0"
    assert event["environment"] == "production"
    # And nothing secret left the worker: not the key (argument and message) nor the card
    raw = json.dumps(event)
    assert "sk_live_51Hsecretvalue" not in raw
    assert "4242424242424242" not in raw
    assert event["exception"]["values"][-1]["value"] == f"Stripe refused key {FILTERED} for job 77"
    # And no local variables at all
    frames = [f for v in event["exception"]["values"] for f in v["stacktrace"]["frames"]]
    assert frames
    assert not any("vars" in frame for frame in frames)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_beat_task_sends_its_check_ins(workers, worker_env, fake_sentry, redis_client):
    # Given one periodic task that is due, a worker for it, and beat, all reporting to the fake
    PeriodicTask.objects.update(enabled=False)
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.create(
        name="cron-probe",
        task="tests.cron_probe",
        args=json.dumps(["sentry"]),
        interval=every_minute,
        last_run_at=timezone.now() - timedelta(minutes=2),
    )
    workers.start("default", SENTRY_DSN=fake_sentry.dsn)
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.worker_app", "beat", "-l", "WARNING"],
        cwd=ROOT,
        env={**worker_env, "SENTRY_DSN": fake_sentry.dsn},
    )
    try:
        # When beat sends it and the worker runs it
        wait_for(lambda: redis_client.get("cron:sentry"), timeout=60)
        # Then the monitor gets an in-progress check-in from beat and an ok from the worker,
        # with the schedule, so Sentry knows when the next one is due
        started = fake_sentry.wait_for(
            "check_in",
            lambda c: c["monitor_slug"] == "cron-probe" and c["status"] == "in_progress",
            timeout=30,
        )
        finished = fake_sentry.wait_for(
            "check_in",
            lambda c: c["monitor_slug"] == "cron-probe" and c["status"] == "ok",
            timeout=30,
        )
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    assert finished["check_in_id"] == started["check_in_id"]
    assert started["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 1,
        "unit": "minute",
    }
