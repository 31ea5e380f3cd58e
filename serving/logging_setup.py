"""Logging of tuneloop processes: text or JSON lines, a request id on every line, secrets masked.

* `configure_logging(fmt, level)` installs one stderr handler (replacing the one it installed before) on
  a logger (root by default) with `JsonFormatter` (`fmt="json"`, one JSON object per line) or a text
  format, plus two filters: `RequestIdFilter` (adds `request_id` from the current request context) and
  `RedactionFilter` (masks secrets). The redaction filter is also added to handlers already attached to
  the root logger (e.g. Ray's), so those do not print secrets either.
* Request ids: the HTTP layer opens a `RequestContext` per request (`bind_request`); its id is the
  client's `x-request-id` when sane (`sane_request_id`), else generated. `current_request_id()` reads it.
* Secrets: `register_secret(value)` (API keys, admin token) and `register_database_url(url)` (its
  password) are replaced by `***` in every record; bearer tokens, `password=`-style pairs and URL
  passwords are masked by pattern whether registered or not.

Stdlib only (no extra dependency).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "JsonFormatter",
    "RedactionFilter",
    "RequestContext",
    "RequestIdFilter",
    "bind_request",
    "configure_logging",
    "configure_replica_logging",
    "current_request_id",
    "install_redaction",
    "new_request_id",
    "redact",
    "register_database_url",
    "register_secret",
    "sane_request_id",
]

MASK = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}$")
# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers (any scheme), then bare bearer tokens.
    (
        re.compile(r"(?i)\b(authorization['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic|token)\s+)?[^\s'\",;&}]+"),
        r"\1\2" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + MASK + "@"),
    # password=..., "api_key": "...", admin_token: ..., token=..., secret=..., x-api-key: ... (not tokens=)
    (
        re.compile(
            r"(?i)\b((?:x-)?api[_-]?keys?|admin[_-]?token|access[_-]?token|token|password|passwd|secret"
            r"|aws_secret_access_key)(['\"]?\s*[:=]\s*['\"]?)([^\s'\",;&}]+)"
        ),
        r"\1\2" + MASK,
    ),
)


# ---------------------------------------------------------------------------------------------- secrets

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secrets_sorted: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it appears in a log record from now on (values under 6 chars are ignored)."""
    global _secrets_sorted
    if not value or len(value) < 6:
        return
    with _secrets_lock:
        _secrets.add(value)
        _secrets_sorted = tuple(sorted(_secrets, key=len, reverse=True))


def register_database_url(url: str | None) -> None:
    """Mask the password of a database URL (raw and URL-encoded forms)."""
    if not url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        register_secret(password)
        register_secret(unquote(password))


def redact(text: str) -> str:
    """`text` with registered secrets and secret-looking patterns replaced by `***`."""
    for secret in _secrets_sorted:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactionFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, traceback and string `extra` fields.

    The message is rendered (`msg % args`) and replaced by its redacted text, so a formatter further down
    never sees the raw secret; the traceback is formatted here too, for the same reason.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # the formatter uses the redacted exc_text
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


# ---------------------------------------------------------------------------------------------- request ids


@dataclass(slots=True)
class RequestContext:
    """What log lines of one HTTP request share. `id` may be replaced once (a completion's own id)."""

    id: str
    client_given: bool = False
    fields: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[RequestContext | None] = ContextVar("tuneloop_request", default=None)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def sane_request_id(value: str | None) -> str | None:
    """`value` if it is a usable request id (1-128 of A-Z a-z 0-9 . _ : + = / -), else None."""
    if value and _REQUEST_ID.match(value):
        return value
    return None


def current_request_id() -> str | None:
    ctx = _current.get()
    return ctx.id if ctx is not None else None


@contextmanager
def bind_request(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make `ctx` the current request context of this task (and tasks it starts) for its duration."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (the current request's id, or '-')."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id() or "-"
        return True


# ---------------------------------------------------------------------------------------------- formatting


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, exc, plus `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id and request_id != "-":
            out["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


def install_redaction(logger: str = "") -> None:
    """Add `RedactionFilter` to every handler of `logger` (root by default) that lacks one."""
    for handler in logging.getLogger(logger or None).handlers:
        if not any(isinstance(f, RedactionFilter) for f in handler.filters):
            handler.addFilter(RedactionFilter())


def configure_replica_logging(fmt: Literal["text", "json"], *, access_log: bool = False) -> None:
    """Logging inside a Serve replica (a Ray worker, whose root handlers belong to Ray).

    JSON: tuneloop's own handler on the `tuneloop` logger (INFO, not propagated to Ray's text handlers).
    Text: Ray's handlers stay; they only get the redaction filter.
    """
    if fmt == "json":
        configure_logging("json", logging.INFO, logger="tuneloop")
    else:
        install_redaction()
        install_redaction("tuneloop")
    if access_log:
        logging.getLogger("tuneloop.access").setLevel(logging.INFO)


def configure_logging(
    fmt: Literal["text", "json"] = "text",
    level: int | str = logging.INFO,
    *,
    logger: str = "",
    stream: Any = None,
) -> logging.Handler:
    """Install tuneloop's handler on `logger` (root by default); idempotent (replaces the previous one).

    For a named logger, records stop propagating to the root (they are printed once, by this handler).
    """
    target = logging.getLogger(logger or None)
    for old in [h for h in target.handlers if getattr(h, "_tuneloop", False)]:
        target.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._tuneloop = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactionFilter())
    target.addHandler(handler)
    target.setLevel(level)
    if logger:
        target.propagate = False
    install_redaction()
    return handler
