"""Errors a client can cause (or suffer) and their OpenAI-style envelopes.

Every exception here knows its HTTP status, OpenAI error `type` and `code`; the HTTP layer turns any
of them into `{"error": {"message", "type", "param", "code"}}`. Every other exception (the registry's,
the engine's, the database's) is mapped to one of these by `serving.api.errors.api_error`, in one place.
"""

from __future__ import annotations

from typing import Any

from serving.protocol import ErrorDetail, ErrorResponse


class APIError(Exception):
    """Base class: an error with an HTTP status and an OpenAI error envelope."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None
    """Extra response headers (e.g. `retry-after`)."""
    unexpected: bool = False
    """True when this stands for an exception nobody anticipated (a bug: logged with its traceback)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type

    def to_body(self) -> dict[str, Any]:
        return envelope(self.message, self.error_type, self.param, self.code)


def envelope(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON body of an error (its shape is `serving.protocol.ErrorResponse`)."""
    detail = ErrorDetail(message=message, type=error_type, param=param, code=code)
    return ErrorResponse(error=detail).model_dump()


class BadRequestError(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(APIError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(APIError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class ConflictError(APIError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLargeError(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(APIError):
    status_code = 429
    error_type = "rate_limit_error"


class ServiceUnavailableError(APIError):
    status_code = 503
    error_type = "service_unavailable"


class InternalServerError(APIError):
    status_code = 500
    error_type = "server_error"
