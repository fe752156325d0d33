"""REST conventions shared by every app: error shape, strict amounts, staff permission, health."""

import logging
import threading
import time

from django.conf import settings
from django.db import connection
from django.http import Http404, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError
from core.money import MAX_AMOUNT
from core.permissions import staff_action_allowed
from core.requestid import request_id_get

logger = logging.getLogger(__name__)

# DRF's built-in validation codes say nothing a client can branch on; a request failing only
# with these gets the generic code "invalid_input".
_GENERIC_CODES = {
    "invalid",
    "required",
    "null",
    "blank",
    "max_length",
    "min_length",
    "max_value",
    "min_value",
    "invalid_choice",
    "not_a_list",
    "empty",
    "does_not_exist",
    "incorrect_type",
    "unique",
    "date",
    "datetime",
    "make_aware",
    "overflow",
    "max_string_length",
    "not_a_dict",
    "not_a_string",
}


def _first_specific_code(codes: object) -> str | None:
    if isinstance(codes, dict):
        codes = list(codes.values())
    if isinstance(codes, list):
        for item in codes:
            found = _first_specific_code(item)
            if found:
                return found
        return None
    return None if codes in _GENERIC_CODES else str(codes)


def exception_handler(exc, context):
    """Turn every error into ``{"code", "detail", "request_id"}`` JSON with a 4xx status.

    Domain errors carry their own code and status; DRF validation errors become
    ``invalid_input`` (or the specific code a field raised, such as ``invalid_amount``) with the
    per-field messages under ``errors``. ``request_id`` is the one in the response's
    ``X-Request-ID`` header and on the request's log lines, for support to look up.
    """
    response = _error_response(exc, context)
    request_id = request_id_get()
    if response is not None and isinstance(response.data, dict) and request_id:
        response.data["request_id"] = request_id
    return response


def _error_response(exc, context):
    if isinstance(exc, DomainError):
        return Response({"code": exc.code, "detail": exc.detail}, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, exceptions.ValidationError):
        code = _first_specific_code(exc.get_codes()) or "invalid_input"
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return Response(
            {"code": code, "detail": "The request is invalid.", "errors": errors},
            status=400,
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        code = exc.get_codes()
        code = code if isinstance(code, str) else "error"
        if isinstance(exc, exceptions.ParseError):
            code = "malformed_request"
        response.data = {"code": code, "detail": str(exc.detail)}
    return response


@extend_schema_field(OpenApiTypes.INT)
class AmountField(serializers.Field):
    """A money amount in minor units: a JSON integer, 1 to 10**15. Never a float or a string."""

    default_error_messages = {
        "invalid_amount": "Amounts are positive integers of minor units (1 to 10**15).",
    }

    def validate_empty_values(self, data):
        # ``null`` is a wrong amount, not a missing one: same code as any other bad amount.
        if data is None:
            self.fail("invalid_amount")
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if type(data) is not int or not 0 < data <= MAX_AMOUNT:
            self.fail("invalid_amount")
        return data

    def to_representation(self, value):
        return int(value)


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField would turn ``5`` or ``true`` into text."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class IsStaff(permissions.BasePermission):
    """Staff API views: asks ``core.permissions`` with the view's ``staff_action`` (default
    ``staff``), the same check the admin pages make."""

    message = "Staff only."

    def has_permission(self, request, view) -> bool:
        action = getattr(view, "staff_action", "staff")
        return staff_action_allowed(user=request.user, action=action)


def healthz(request):
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


_readiness_lock = threading.Lock()
_readiness: tuple[float, dict] | None = None


def _database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", named below
        logger.warning("readiness: database check failed: %r", exc)
        return {"status": "unavailable", "checks": {"database": f"error: {type(exc).__name__}"}}
    return {"status": "ok", "checks": {"database": "ok"}}


def readyz(request):
    """Readiness: the database answers. Cached ``READYZ_CACHE_SECONDS`` per process.

    Nothing slow and nothing another service decides: the broker and the workers are not
    checked here (a web pod taken out of rotation because Redis blinked, or because workers
    are restarting, helps nobody; payout work waits in the broker). Their state is in the
    metrics and the staff dashboard (``core.queues.broker_state``). However often this is
    called, it costs at most one ``SELECT 1`` per cache period per process.
    """
    global _readiness
    with _readiness_lock:
        now = time.monotonic()
        if _readiness is None or now - _readiness[0] >= settings.READYZ_CACHE_SECONDS:
            _readiness = (now, _database_check())
        body = _readiness[1]
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)
