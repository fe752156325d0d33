"""One id per request, and per task: taken from ``X-Request-ID`` or made here, kept in a
context variable, written on every log line, echoed in the response and in error bodies.

Whatever a request sends to Celery carries the id in a message header, so the tasks it starts
(and the tasks those start) log under the same id: one grep follows a resolve from the HTTP
request to the last payout batch. The JSON 500 handler and the DRF exception handler read
``request_id_get()``; nothing else needs to know where the id comes from.
"""

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
# Celery message header that carries the id from the publisher to the task.
TASK_HEADER = "request_id"

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# A caller's id is logged and echoed, so it must be short and harmless in a header and a
# JSON log line; anything else is replaced by a fresh id rather than trusted.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def request_id_new() -> str:
    return uuid.uuid4().hex


def request_id_accept(value: str | None) -> str:
    """The caller's id when it is acceptable, a new one otherwise."""
    if value and _ACCEPTABLE.fullmatch(value):
        return value
    return request_id_new()


def request_id_get() -> str | None:
    """The id of the request or task this code runs for, if any."""
    return _request_id.get()


def request_id_set(value: str | None):
    """Bind ``value`` for the current context; returns the token for ``request_id_reset``."""
    return _request_id.set(value)


def request_id_reset(token) -> None:
    _request_id.reset(token)


class RequestIdMiddleware:
    """First middleware: binds the id before anything can log or fail, echoes it after.

    The id stays bound until the response is finished (``request_finished``), not just until
    the middleware returns: Django logs 4xx and 5xx responses after the middleware chain.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_accept(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        request_id_set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


@receiver(request_finished, dispatch_uid="core.requestid.unbind")
def _unbind(**kwargs) -> None:
    request_id_set(None)
