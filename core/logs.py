"""Log lines that carry their context: JSON in production, readable text on a console.

``LOG_FORMAT=json`` (the default without ``DEBUG``) writes one JSON object per line with
``time``, ``level``, ``logger``, ``message`` and, when known, ``request_id``, ``task_name``,
``task_id``, ``queue`` and ``job_id`` -- what a log pipeline indexes. ``LOG_FORMAT=console``
writes the same fields as text. The fields come from context variables bound by the request
middleware (``core.requestid``) and by the base task (``log_context_bind``), so no call site
passes them.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from core.requestid import request_id_get

_context: ContextVar[dict[str, Any]] = ContextVar("log_context", default={})  # noqa: B039 - never mutated: each bind makes a new dict

# The order fields appear in, on a console line and in the README.
CONTEXT_FIELDS = ("request_id", "task_name", "task_id", "queue", "job_id")


@contextmanager
def log_context_bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block (nested binds merge)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def log_context() -> dict[str, Any]:
    """What the current log lines carry (request id first)."""
    request_id = request_id_get()
    bound = _context.get()
    return {"request_id": request_id, **bound} if request_id else dict(bound)


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record, so every formatter and handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in log_context().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonLinesFormatter(JsonFormatter):
    """One JSON object per line; the context fields are plain record attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            **kwargs,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # ISO 8601 in UTC, what log pipelines parse without a pattern.
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class ConsoleFormatter(logging.Formatter):
    """``time level logger message [request_id=... task_name=...]`` for people reading a tty."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        )
        return f"{line} [{context}]" if context else line


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for settings: one stream handler, the chosen format, the filter."""
    if log_format not in ("json", "console"):
        raise ValueError(f"LOG_FORMAT must be json or console, not {log_format!r}")
    formatter = (
        "core.logs.JsonLinesFormatter" if log_format == "json" else "core.logs.ConsoleFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "core.logs.ContextFilter"}},
        "formatters": {"main": {"()": formatter}},
        "handlers": {
            "stream": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["stream"], "level": level},
        "loggers": {
            # The stripe library logs two INFO lines per request (with its request ids); the
            # Stripe client logs one outcome line itself.
            "stripe": {"level": "WARNING"},
        },
    }
