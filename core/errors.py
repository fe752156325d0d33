"""Domain errors: every business rule that refuses a request raises one of these.

Each carries a stable machine-readable ``code`` and an HTTP status; ``core.api.exception_handler``
turns them into ``{"code", "detail"}`` JSON, so services never know about HTTP.
"""


class DomainError(Exception):
    code = "error"
    status = 400
    default_detail = "The request could not be processed."

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        self.detail = detail or self.default_detail
        if code is not None:
            self.code = code
        super().__init__(self.detail)


class InvalidInput(DomainError):
    code = "invalid_input"
    status = 400


class NotFound(DomainError):
    code = "not_found"
    status = 404
    default_detail = "Not found."


class Forbidden(DomainError):
    code = "permission_denied"
    status = 403
    default_detail = "You may not do this."


class Conflict(DomainError):
    """The request is valid but the current state of the resource refuses it."""

    code = "conflict"
    status = 409


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    status = 400
    default_detail = "The balance is too low for this amount."


class TransientError(Exception):
    """A failure worth retrying (a timeout, a dropped connection); the base task retries it."""


class AmountOutOfRange(Conflict):
    """A sum (a balance, a challenge's total) would leave the range the database stores."""

    code = "amount_out_of_range"
    default_detail = "This amount would take a total out of the range the platform can hold."
