"""Sentry: errors from web, workers and beat, scrubbed before they leave the process.

``sentry_init`` is called by the settings when ``SENTRY_DSN`` is set (so every process --
gunicorn, each worker, beat -- reports). What it sets up:

- release (``stakehold@<package version>``) and environment (``production``, or
  ``development`` with ``DEBUG``), both overridable;
- traces sampled at ``SENTRY_TRACES_SAMPLE_RATE`` (10% in production, everything with
  ``DEBUG``, unless set);
- no local variables and no personal data in events (``send_default_pii`` keeps its default,
  off), and a recursive scrubber
  (``event_scrub``) over the whole event, breadcrumbs and transactions included;
- the Django and Celery integrations, with a check-in for every periodic task beat sends
  (Sentry Crons, ``monitor_beat_tasks``);
- tags ``task_name``, ``task_id``, ``queue``, ``job_id`` on events from tasks (set by the base
  task through ``sentry_tags_set``).
"""

import re
from importlib import metadata
from typing import Any, cast

import sentry_sdk
from sentry_sdk.types import Event, Hint

FILTERED = "[Filtered]"

# Keys whose values never leave the process, wherever they appear (headers, bodies, extra
# data, breadcrumbs, task arguments), matched case-insensitively as substrings.
_SENSITIVE_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|authorization|cookie|session|csrf|signature"
    r"|dsn|credential|private|iban|card|cvc|cvv|account_number|routing_number",
    re.IGNORECASE,
)
# Secret-looking values, whatever key they are under (in messages and exception texts too):
# Stripe keys and webhook secrets, bearer/token credentials, URL passwords.
_SENSITIVE_VALUE = re.compile(
    r"\b(sk|rk|pk)_(live|test)_[0-9A-Za-z]+|\bwhsec_[0-9A-Za-z]+"
    r"|\b(Bearer|Token)\s+[0-9A-Za-z._~+/=-]+"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
)
_MAX_DEPTH = 20


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return FILTERED
    if isinstance(value, dict):
        return {
            key: FILTERED
            if isinstance(key, str) and _SENSITIVE_KEY.search(key)
            else _scrub(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item, depth + 1) for item in value]
    if isinstance(value, str):
        return _SENSITIVE_VALUE.sub(FILTERED, value)
    return value


def event_scrub(event: Event, hint: Hint) -> Event:
    """Sentry's ``before_send``: the event with every sensitive key's value and every
    secret-looking string replaced by ``[Filtered]``, at any depth."""
    return cast(Event, _scrub(event))


def release_default() -> str:
    try:
        return f"stakehold@{metadata.version('stakehold')}"
    except metadata.PackageNotFoundError:
        return "stakehold@unknown"


def sentry_init(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> None:
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        include_local_variables=False,
        before_send=event_scrub,
        before_send_transaction=event_scrub,
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=True)],
    )


def sentry_tags_set(tags: dict[str, object]) -> None:
    """Tag what the current scope reports (a task run: its own isolation scope)."""
    for name, value in tags.items():
        if value is not None:
            sentry_sdk.set_tag(name, str(value))


def sentry_message_capture(
    *, message: str, fingerprint: list[str], tags: dict[str, object]
) -> None:
    """Report an operational alert as a warning, grouped by ``fingerprint``. Nothing without a
    DSN."""
    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = fingerprint
        for name, value in tags.items():
            scope.set_tag(name, str(value))
        sentry_sdk.capture_message(message, level="warning")
