"""Map every error to an OpenAI-style JSON envelope with the right status (never a 500 for client input)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.exceptions import NotFoundException as LitestarNotFound
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from serving.errors import APIError, BadRequestError, envelope

log = logging.getLogger("tuneloop.serving")

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


def error_response(
    status: int,
    message: str,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> Response[dict[str, object]]:
    etype = error_type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return Response(envelope(message, etype, param, code), status_code=status, media_type="application/json")


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


def handle_api_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, APIError)
    return Response(exc.to_body(), status_code=exc.status_code, media_type="application/json")


def handle_domain_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    """Errors from the registry/store that carry a `status_code` (4xx) and a message."""
    status = int(getattr(exc, "status_code", 500))
    code = getattr(exc, "code", None)
    if status >= 500 and not getattr(exc, "expose", False):
        log.exception("internal error", exc_info=exc)
        return error_response(500, "Internal server error.")
    if status >= 500:  # an operational condition whose message helps the operator (e.g. disk full)
        log.error("%s: %s", type(exc).__name__, exc)
    return error_response(status, str(exc), code=str(code) if code else None)


def handle_http_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if isinstance(exc, LitestarNotFound):
        return error_response(404, "Not found: no such route.", code="not_found")
    if isinstance(exc, NotAuthorizedException):
        return error_response(401, exc.detail or "Unauthorized.", code="invalid_api_key")
    if status >= 500:
        log.error("http error %s: %s", status, exc.detail)
        return error_response(status, "Internal server error.")
    return error_response(status, exc.detail or "Bad request.")


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    if isinstance(exc, OperationalError | InterfaceError):  # database down / connection lost: retryable
        log.error("database unavailable: %s", str(exc).splitlines()[0])
        message = "The database is unavailable; retry later."
        response = error_response(503, message, "service_unavailable", code="database_unavailable")
        response.headers["retry-after"] = "5"
        return response
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "Internal server error.")
