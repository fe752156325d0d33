"""REST conventions shared by every app: error shape, strict amounts, staff permission, health."""

import logging

from celery import current_app as celery_app
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
    """Turn every error into ``{"code", "detail"}`` JSON with a 4xx status.

    Domain errors carry their own code and status; DRF validation errors become
    ``invalid_input`` (or the specific code a field raised, such as ``invalid_amount``) with the
    per-field messages under ``errors``.
    """
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


def readyz(request):
    """Readiness: the database and the broker answer; workers are reported, not required.

    Web pods stay in rotation while workers restart: payout work waits in the broker.
    """
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", named below
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}"
    failing = [name for name, state in checks.items() if state != "ok"]
    workers = 0
    if "broker" not in failing:
        try:
            workers = len(celery_app.control.ping(timeout=0.5) or [])
        except Exception:
            logger.warning("worker ping failed", exc_info=True)
    body = {"status": "ok" if not failing else "unavailable", "checks": checks, "workers": workers}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
