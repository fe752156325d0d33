"""Middleware of the API's edge: body size limits. (The request id is ``core.requestid``.)"""

from django.conf import settings

from core.api import error_response


class BodySizeLimitMiddleware:
    """Refuse an API body over its limit with ``413 request_too_large`` before anything reads
    it: ``API_MAX_BODY_BYTES`` for the API, ``WEBHOOK_MAX_BODY_BYTES`` for webhooks.

    The declared Content-Length is what counts: a WSGI server hands Django no more than that
    many bytes, and a body without one reads as empty.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            limit = (
                settings.WEBHOOK_MAX_BODY_BYTES
                if request.path.startswith("/api/webhooks/")
                else settings.API_MAX_BODY_BYTES
            )
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return error_response(
                    status=400, code="malformed_request", detail="Invalid Content-Length."
                )
            if length > limit:
                return error_response(
                    status=413,
                    code="request_too_large",
                    detail=f"Request bodies here are limited to {limit} bytes.",
                )
        return self.get_response(request)
