"""The OpenAPI schema's conventions (``DEFAULT_SCHEMA_CLASS``): every error answer each
operation can give, in the one ``Error`` shape."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import permissions

from core.api import ErrorSerializer

# Answered by the web server in front of Django (gunicorn's request-line limit), as its own
# page rather than an ``Error``: documented without a body.
SERVER_ANSWERS = {"414": "The address is too long (the web server's limit on the request line)."}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema, plus the error answers each operation can give, all in the one
    ``Error`` shape, so a generated client knows every status it must handle."""

    def _error_statuses(self) -> dict[str, str]:
        statuses = {
            "406": "The Accept header asks for something other than JSON.",
            "500": "Unexpected error (code internal_error, with request_id).",
        }
        view = self.view
        if not any(isinstance(p, permissions.AllowAny) for p in view.get_permissions()):
            statuses["401"] = "No valid token or session (missing, unknown, expired or revoked)."
            statuses["403"] = "Not allowed for this user (permission_denied or a business rule)."
        has_body = self.method in ("POST", "PUT", "PATCH")
        if has_body:
            statuses["400"] = "Malformed or invalid input (malformed_request, invalid_input, ...)."
            statuses["413"] = "The body is over the size limit (request_too_large)."
            statuses["415"] = "The body is not in a supported media type."
        if "{" in self.path or self._is_list_view():
            statuses["404"] = "No such object (or no such page)."
        parameters = self._get_parameters()
        if self.method == "GET" and parameters:
            statuses["400"] = "An invalid query parameter."
        if parameters:
            statuses.update(SERVER_ANSWERS)
        if any(
            self.method in getattr(throttle, "methods", ()) for throttle in view.get_throttles()
        ):
            statuses["429"] = "Throttled (code throttled, with retry_after and Retry-After)."
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status, description in self._error_statuses().items():
            if status in SERVER_ANSWERS:
                responses.setdefault(status, {"description": description})
            elif status not in responses:
                responses[status] = {
                    **self._get_response_for_code(ErrorSerializer, status, direction=direction),
                    "description": description,
                }
        return responses
