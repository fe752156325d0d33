"""REST conventions shared by every app: error shape, strict amounts, the staff permission,
throttles, health. (The JSON parser is ``core.parsers``, the schema's conventions
``core.schema``.)"""

import functools
import hashlib
import logging
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import Http404, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, permissions, serializers, throttling
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError
from core.money import MAX_AMOUNT
from core.permissions import staff_action_allowed
from core.redis_client import redis_script
from core.requestid import request_id_get

logger = logging.getLogger(__name__)


@functools.cache
def _renderer(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    return serializer_class()


def serialized(serializer_class: type[serializers.Serializer], instance: Any) -> dict:
    """What ``serializer_class(instance).data`` gives, for an output serializer that needs no
    context (no request, no hyperlinks), on a hot path.

    DRF deep-copies every declared field of each serializer it builds (a stake's answer spent
    about 0.2 ms on it, 0.03 ms on the rendering itself). Rendering only reads the bound
    fields, so one instance per class, built on first use, renders every instance, from any
    thread.
    """
    return _renderer(serializer_class).to_representation(instance)


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
        if isinstance(exc, exceptions.Throttled):
            # DRF has set the Retry-After header from the same figure.
            response.data["retry_after"] = math.ceil(exc.wait or 0)
    return response


def error_response(*, status: int, code: str, detail: str) -> JsonResponse:
    """The API's error shape for answers given outside DRF (middleware, the 500 handler), with
    the request id as DRF's errors carry it."""
    body = {"code": code, "detail": detail}
    if request_id := request_id_get():
        body["request_id"] = request_id
    return JsonResponse(body, status=status)


def server_error(request, *args, **kwargs):
    """``handler500``: an API caller gets JSON naming the request id to quote; the admin keeps
    Django's page. Django has logged the exception already."""
    if not request.path.startswith("/api/"):
        from django.views.defaults import server_error as html_server_error

        return html_server_error(request, *args, **kwargs)
    return error_response(
        status=500,
        code="internal_error",
        detail="Something went wrong on our side; quote the request id when reporting it.",
    )


class ErrorSerializer(serializers.Serializer):
    """What every error answer carries (documented once as the ``Error`` schema)."""

    code = serializers.CharField(help_text="Stable machine-readable code, e.g. insufficient_funds.")
    detail = serializers.CharField(help_text="A sentence for people.")
    errors = serializers.DictField(
        required=False, help_text="Per-field messages, with code invalid_input (and others)."
    )
    retry_after = serializers.IntegerField(
        required=False, help_text="With 429: seconds to wait (also the Retry-After header)."
    )
    request_id = serializers.CharField(
        required=False, help_text="This request's id (also the X-Request-ID header), to quote."
    )

    class Meta:
        ref_name = "Error"


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


class NewestFirstPagination(CursorPagination):
    """Pages of a list that grows with the platform's history (challenges, payout jobs, dead
    letters), newest first, by a cursor on the id: ``{next, previous, results}``. A page costs
    the same at any depth (a keyset, not an OFFSET that reads every row before it) and nothing
    counts the whole list (with a million challenges, numbered pages spent 37-111 ms of each
    request on a count and 155 ms on page 2,500; a cursor page takes 6-9 ms at any depth).
    A cursor that the API did not give is ``404``."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 200


class IsStaff(permissions.BasePermission):
    """Staff API views: asks ``core.permissions`` with the view's ``staff_action`` (default
    ``staff``), the same check the admin pages make, so each view needs the Django permission
    its action maps to. Anonymous callers get 401, others 403 ``permission_denied``."""

    message = "Staff only."

    def has_permission(self, request, view) -> bool:
        action = getattr(view, "staff_action", "staff")
        return staff_action_allowed(user=request.user, action=action)


def client_ip(request) -> str:
    """The caller's address: the socket's, or the one our own proxies (``TRUSTED_PROXY_COUNT``
    of them) wrote into X-Forwarded-For. Never a value the client chose. Throttles and the
    admin lockout (django-axes) both count by it."""
    meta = request.META
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if proxies and forwarded:
        addresses = [part.strip() for part in forwarded.split(",")]
        return addresses[-min(proxies, len(addresses))]
    return meta.get("REMOTE_ADDR") or ""


_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_rate(rate: str) -> tuple[int, int]:
    """DRF's rate format: "10/min" is (10, 60); the period's first letter counts."""
    count, period = rate.split("/")
    return int(count), _PERIODS[period[0]]


# Count one more request in a window: create its counter with the window's expiry unless it
# exists, add one, answer the count. One script, so no window is lost between the two commands.
_WINDOW_COUNT_LUA = b"""
redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])
"""


def _window_count(key: str, *, timeout: int) -> int:
    """Count one more request in the window ``key`` of the shared cache; return the count.

    One command (``_WINDOW_COUNT_LUA``), atomic, under the cache's key (its prefix and version)
    and on the server it writes to (the first of ``LOCATION``), on one client kept per process:
    the cache itself builds a new client on each call.
    """
    location = settings.CACHES["default"]["LOCATION"].split(",")[0]
    script = redis_script(location, _WINDOW_COUNT_LUA)
    return int(script(keys=[cache.make_and_validate_key(key)], args=[timeout]))


class RateThrottle(throttling.BaseThrottle):
    """A fixed-window counter in the shared cache, so every web process counts together.

    ``scope`` names the rate in ``settings.THROTTLE_RATES`` (DRF's "10/min" format; empty turns
    it off); ``ident`` says whom to count (None: nobody, let the request through); only the
    ``methods`` listed count. The counter is atomic (Redis INCR), so concurrent requests cannot
    slip past it together. If the cache is down the request goes through: throttling protects
    capacity, and the money rules do not depend on it.
    """

    scope = ""
    kind = ""
    methods: tuple[str, ...] = ("POST",)

    def ident(self, request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        rate = settings.THROTTLE_RATES.get(self.scope)
        if request.method not in self.methods or not rate:
            return True
        ident = self.ident(request)
        if ident is None:
            return True
        limit, period = _parse_rate(rate)
        now = time.time()
        window = int(now // period)
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        key = f"throttle:{self.scope}:{self.kind}:{digest}:{period}:{window}"
        try:
            count = _window_count(key, timeout=period + 1)
        except Exception:  # a cache outage must not take the API down
            logger.warning("throttle cache unavailable; %s not counted", key, exc_info=True)
            return True
        if count <= limit:
            return True
        self._wait = (window + 1) * period - now
        return False

    def wait(self) -> float:
        return self._wait


class AuthAddressThrottle(RateThrottle):
    """``THROTTLE_AUTH`` per client address: token, register, password change."""

    scope = "auth"
    kind = "ip"

    def ident(self, request) -> str | None:
        return client_ip(request)


class AuthUsernameThrottle(RateThrottle):
    """``THROTTLE_AUTH`` per username tried (or the signed-in user's), whatever the address:
    guessing one account's password from many addresses is throttled too."""

    scope = "auth"
    kind = "username"

    def ident(self, request) -> str | None:
        if request.user and request.user.is_authenticated:
            return request.user.get_username().lower()
        data = request.data
        username = data.get("username") if isinstance(data, dict) else None
        return username.lower()[:150] if isinstance(username, str) else None


class UserRateThrottle(RateThrottle):
    kind = "user"

    def ident(self, request) -> str | None:
        user = request.user
        return str(user.pk) if user and user.is_authenticated else None


class MoneyThrottle(UserRateThrottle):
    """``THROTTLE_MONEY`` per user: stakes and deposits."""

    scope = "money"


class CreateThrottle(UserRateThrottle):
    """``THROTTLE_CREATE`` per user: creating challenges."""

    scope = "create"


class StaffThrottle(UserRateThrottle):
    """``THROTTLE_STAFF`` per staff user, every method of every staff endpoint."""

    scope = "staff"
    methods = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


AUTH_THROTTLES = [AuthAddressThrottle, AuthUsernameThrottle]


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
