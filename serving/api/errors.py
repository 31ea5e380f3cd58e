"""One mapping from every exception to an HTTP status and the OpenAI error envelope.

`api_error(exc)` is the table: it turns any exception into an `APIError` (status, `type`, `param`,
`code`, message, extra headers). The Litestar exception handler (`handle_error`), the non-streamed
completion path (which raises the mapped error) and the streamed path (which writes the mapped error as
the last SSE event) all use it, so a given failure answers the same way on every path.

`ERROR_RESPONSES` documents the envelope (`serving.protocol.ErrorResponse`) for the OpenAPI document.

The registry's errors (also the request log's) know nothing of HTTP: `REGISTRY_STATUS` gives each family
its status; the engine's and the database's errors get theirs from `api_error` too. Client input is
never a 500.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.exceptions import NotFoundException as LitestarNotFound
from litestar.openapi import ResponseSpec
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from serving.engine.base import EngineError, InvalidParameterError, PromptTooLongError
from serving.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    ServiceUnavailableError,
)
from serving.protocol import ErrorResponse
from serving.registry import errors as registry

log = logging.getLogger("tuneloop.serving")

__all__ = [
    "ERROR_RESPONSES",
    "REGISTRY_STATUS",
    "api_error",
    "empty_body_error",
    "error_type_for",
    "handle_error",
    "registry_status",
    "validation_error",
]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


_ERRORS = {
    400: "The request is invalid (the message and `param` name the field).",
    401: "Missing or wrong API key / admin token.",
    403: "Forbidden: the admin API is disabled (no admin token is configured).",
    404: "No such model, adapter, experiment or route.",
    409: "Conflicts with the current state (e.g. an adapter refused while loading).",
    413: "Request body too large.",
    429: "Rate limit exceeded.",
    500: "An unexpected server error (logged with the request id); never a client's mistake.",
    503: "Not ready, or a dependency is unavailable.",
}
ERROR_RESPONSES: dict[int, ResponseSpec] = {
    status: ResponseSpec(ErrorResponse, description=text, generate_examples=False)
    for status, text in _ERRORS.items()
}
"""The OpenAI error envelope, documented for every operation's 4xx/5xx answers."""


def error_type_for(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _with_status(status: int, message: str, *, code: str | None = None) -> APIError:
    return APIError(message, code=code, status_code=status, error_type=error_type_for(status))


def _internal(exc: BaseException, message: str = "Internal server error.") -> APIError:
    err = InternalServerError(message)
    err.unexpected = True
    log.error("unhandled error: %r", exc, exc_info=exc)
    return err


REGISTRY_STATUS: tuple[tuple[type[registry.RegistryError], int], ...] = (
    (registry.InvalidRequestError, 400),
    (registry.NotFoundError, 404),
    (registry.ConflictError, 409),
    (registry.StorageFullError, 507),
)
"""The HTTP status of each registry / request-log error family (first match; anything else is a 500)."""


def registry_status(exc: registry.RegistryError) -> int:
    return next((status for family, status in REGISTRY_STATUS if isinstance(exc, family)), 500)


def api_error(exc: BaseException, *, prompt_param: str | None = None) -> APIError:
    """The `APIError` the client gets for `exc` (itself when it already is one).

    `prompt_param` is set while a completion runs (the request's prompt field, `messages` or `prompt`):
    then the engine's errors are mapped too — a prompt over the context length or a parameter the engine
    refused is the client's to fix (400), any other engine failure is the server's (500). Outside a
    completion a `ValueError` is a bug (500), not the client's fault.
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, registry.RegistryError):
        # The registry's `param` names its own arguments (e.g. `request_id`), not the request's fields,
        # so it is not sent; the code and the message are.
        status = registry_status(exc)
        if status >= 500 and not getattr(exc, "expose", False):
            return _internal(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return _with_status(status, exc.message, code=exc.code or None)
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, OperationalError | InterfaceError):  # database down / connection lost: retryable
        log.error("database unavailable: %s", str(exc).splitlines()[0])
        message = "The database is unavailable; retry later."
        err = ServiceUnavailableError(message, code="database_unavailable")
        err.headers = {"retry-after": "5"}
        return err
    if prompt_param is not None:
        if isinstance(exc, PromptTooLongError):
            return BadRequestError(str(exc), param=prompt_param, code="context_length_exceeded")
        if isinstance(exc, EngineError):
            return InternalServerError(f"The engine failed: {exc}")
        if isinstance(exc, ValueError):  # the engine refused the request's parameters
            param = exc.param if isinstance(exc, InvalidParameterError) else None
            return BadRequestError(str(exc), param=param, code="invalid_value")
        return _internal(exc, "The server failed while generating.")
    return _internal(exc)


def _http_error(exc: HTTPException) -> APIError:
    """Litestar's own errors (no such route, wrong method, body too large, bad query parameter...)."""
    status = exc.status_code
    if isinstance(exc, LitestarNotFound):
        return NotFoundError("Not found: no such route.", code="not_found")
    if isinstance(exc, ValidationException) and _body_missing(exc):
        return empty_body_error()
    if isinstance(exc, NotAuthorizedException):
        return AuthenticationError(exc.detail or "Unauthorized.")
    if status >= 500:
        log.error("http error %s: %s", status, exc.detail)
        return _with_status(status, "Internal server error.")
    return _with_status(status, exc.detail or "Bad request.")


def _body_missing(exc: ValidationException) -> bool:
    """Litestar's answer to a typed body parameter without a body (`serving.api.bodies` got no bytes)."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    return any(isinstance(e, dict) and e.get("key") == "data" and e.get("source") == "body" for e in extra)


@cache
def _empty_body_message() -> str:
    try:
        TypeAdapter(Any).validate_json(b"")
    except ValidationError as exc:
        return validation_error(exc).message
    raise AssertionError("an empty body parsed as JSON")  # pragma: no cover


def empty_body_error() -> BadRequestError:
    """The 400 for a request without a body: the same as for any other body that is not JSON."""
    return BadRequestError(_empty_body_message(), code="invalid_json")


def handle_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Litestar's exception handler for every exception: `api_error(exc)` as a JSON response."""
    err = api_error(exc)
    return Response(
        err.to_body(), status_code=err.status_code, media_type="application/json", headers=err.headers
    )


_TYPE_TAGS = frozenset(
    {"str", "int", "float", "bool", "dict", "list", "none", "constrained-str", "constrained-int"}
)


_FORMAT_TAGS = frozenset({"text", "json_object", "json_schema"})
_ROLE_TAGS = frozenset({"system", "developer", "user", "assistant", "tool"})


def _loc_part(part: object) -> bool:
    """A field name or list index in a pydantic error location (not a union member's type or class tag)."""
    text = str(part)
    return not (
        "[" in text or "(" in text or text in _TYPE_TAGS or text.startswith("function-") or text[:1].isupper()
    )


def _param(err: Any) -> str:
    """The request field an error is about, as the client wrote it (union and tag names left out)."""
    parts = [p for p in err.get("loc", ()) if _loc_part(p)]
    if len(parts) > 1 and parts[0] == "response_format" and parts[1] in _FORMAT_TAGS:
        del parts[1]  # the tagged union's member (`response_format.json_schema.json_schema.name`)
    if len(parts) > 2 and parts[0] == "messages" and isinstance(parts[1], int) and parts[2] in _ROLE_TAGS:
        del parts[2]
    if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(str((err.get("ctx") or {}).get("discriminator", "")).strip("'") or "type")
    return ".".join(str(p) for p in parts)


def validation_error(exc: ValidationError) -> BadRequestError:
    """The first pydantic error as a 400 naming the field (`param`); an unknown field is named too."""
    errors = exc.errors()
    # an unknown field anywhere is the clearest thing to report (other errors may be its consequences)
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = _param(err)
    msg = err.get("msg", "invalid value")
    if err.get("type") == "json_invalid":
        return BadRequestError(f"The request body is not valid JSON: {msg}", code="invalid_json")
    if err.get("type") == "missing":
        return BadRequestError(
            f"Missing required parameter: '{loc}'.", param=loc or None, code="missing_required_parameter"
        )
    if err.get("type") == "extra_forbidden":
        return BadRequestError(
            f"Unrecognized request argument supplied: '{loc}'. This server does not support it.",
            param=loc or None,
            code="unknown_parameter",
        )
    cause = (err.get("ctx") or {}).get("error")
    param = getattr(cause, "param", None)
    if isinstance(param, str):  # a model-level check that names its field
        prefix = f"{loc}." if loc else ""
        return BadRequestError(str(cause), param=prefix + param, code="invalid_value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    where = f"'{loc}': " if loc else ""
    return BadRequestError(f"Invalid value for {where}{msg}", param=loc or None, code="invalid_value")
