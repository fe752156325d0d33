"""Request ids and the shape of log lines, in the web process and in a real worker."""

import io
import json
import logging
import re

import pytest
from celery import current_app

from core.logs import ConsoleFormatter, ContextFilter, JsonLinesFormatter, log_context_bind
from core.requestid import request_id_reset, request_id_set
from tests.conftest import Workers, wait_for


@pytest.fixture
def json_lines():
    """Log lines of ``django.request`` as the production handler writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_request_id_from_the_caller_is_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.42")
    assert response["X-Request-ID"] == "lb-7f3a.42"


@pytest.mark.parametrize("given", [None, "", "has spaces", "x" * 129, "quote\"'<"])
def test_a_missing_or_unusable_request_id_is_replaced_by_a_new_one(client, given):
    headers = {} if given is None else {"HTTP_X_REQUEST_ID": given}
    response = client.get("/healthz", **headers)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


@pytest.mark.django_db
def test_error_bodies_and_log_lines_carry_the_request_id(client, json_lines):
    response = client.get("/api/challenges/", HTTP_X_REQUEST_ID="support-ticket-1")

    assert response.status_code == 401
    assert response.json()["request_id"] == "support-ticket-1"
    assert response["X-Request-ID"] == "support-ticket-1"
    [line] = json_lines()
    assert set(line) == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "status_code",
        "request",
    }
    assert line["level"] == "WARNING"
    assert line["logger"] == "django.request"
    assert line["message"] == "Unauthorized: /api/challenges/"
    assert line["request_id"] == "support-ticket-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_the_console_format_shows_the_same_fields_as_text():
    record = logging.LogRecord("payouts", logging.INFO, __file__, 1, "paid %s", (3,), None)
    token = request_id_set("r-9")
    try:
        with log_context_bind(task_name="payouts.tasks.x", job_id=4):
            ContextFilter().filter(record)
    finally:
        request_id_reset(token)
    line = ConsoleFormatter().format(record)
    assert line.endswith("INFO payouts paid 3 [request_id=r-9 task_name=payouts.tasks.x job_id=4]")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_log_lines_name_the_task_its_job_and_the_request_that_sent_it(
    worker_env, redis_client, tmp_path
):
    # Given a worker writing JSON lines to a file
    redis_client.flushdb()
    pool = Workers(worker_env)
    pool.log_dir = tmp_path
    pool.start("default", name="logs", loglevel="INFO", LOG_FORMAT="json")
    try:
        # When a request sends a job task
        token = request_id_set("req-from-web")
        try:
            task_id = current_app.send_task("tests.logs_its_context", args=[5, "logs"]).id
        finally:
            request_id_reset(token)
        wait_for(lambda: redis_client.get("done:logs"), timeout=60)
    finally:
        pool.stop_all()
        redis_client.flushdb()

    # Then the task's own log line carries the task, its queue, its job and the request id
    lines = []
    for raw in (tmp_path / "logs.log").read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    [line] = [x for x in lines if x.get("message") == "working on job 5"]
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "tests.tasks_for_tests",
        "message": "working on job 5",
        "request_id": "req-from-web",
        "task_name": "tests.logs_its_context",
        "task_id": task_id,
        "queue": "default",
        "job_id": 5,
    }
    # And every line the worker wrote is JSON (Celery's own included), apart from its banner
    assert any(x["logger"].startswith("celery") for x in lines)
