"""Per-request plumbing of the HTTP app: request id, rate limiting, access log.

* `RequestContextMiddleware` (every matched route): opens the request's `RequestContext` (the client's
  `x-request-id` when sane, else a generated one) for the log lines of the request, applies the rate
  limit (not to `/health`, `/ready`, `/metrics`), and writes the access log line when enabled.
* `add_request_id_header` (a `before_send` hook, every response including 404s): sets `x-request-id`.
  A completion without a client-given id adopts the completion's own id (`adopt_request_id`), so the
  header, the body's `id` and the log lines name the request the same way.

A refused request gets OpenAI's 429 envelope (`type: rate_limit_error`, `code: rate_limit_exceeded`) with
`retry-after` and `x-ratelimit-*` headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Message,
    Receive,
    Scope,
    Send,
)

from serving.api.ratelimit import TokenBucketLimiter
from serving.errors import envelope
from serving.logging_setup import RequestContext, bind_request, new_request_id, sane_request_id

__all__ = [
    "EXEMPT_PATHS",
    "IngressSettings",
    "REQUEST_ID_HEADER",
    "RequestContextMiddleware",
    "add_request_id_header",
    "adopt_request_id",
    "bearer_token",
    "key_matches",
    "request_context",
]

REQUEST_ID_HEADER = "x-request-id"
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
_STATE_KEY = "tuneloop.request"
access_log = logging.getLogger("tuneloop.access")
log = logging.getLogger("tuneloop.serving")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def bearer_token(authorization: str | None) -> str:
    auth = authorization or ""
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def key_matches(given: str, keys: Iterable[str]) -> bool:
    """True when `given` equals one of `keys`; every key is compared in constant time (no early exit)."""
    data = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(data, key.encode())
    return bool(given) and found


def request_context(scope: Scope) -> RequestContext:
    """The request's context, created on first use (client id if sane, else generated)."""
    state = scope.setdefault("state", {})
    ctx = state.get(_STATE_KEY)
    if ctx is None:
        given = sane_request_id(_header(scope, REQUEST_ID_HEADER.encode()))
        ctx = RequestContext(given or new_request_id(), client_given=given is not None)
        state[_STATE_KEY] = ctx
    return ctx


def adopt_request_id(scope: Scope, request_id: str) -> None:
    """Name the request by `request_id` (a completion id) unless the client named it."""
    ctx = request_context(scope)
    if not ctx.client_given:
        ctx.id = request_id


async def add_request_id_header(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start" or scope.get("type") != "http":
        return
    rid = request_context(scope).id.encode()
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER.encode()]
    headers.append((REQUEST_ID_HEADER.encode(), rid))
    message["headers"] = headers


@dataclass(frozen=True, slots=True)
class IngressSettings:
    """What `RequestContextMiddleware` needs (given when the app is built)."""

    api_keys: frozenset[str] = frozenset()
    """Inference keys: a request with a valid one is rate-limited per key, others per client IP."""
    limiter: TokenBucketLimiter | None = None
    """None = no rate limit."""
    trust_forwarded_for: bool = False
    """Count the first `x-forwarded-for` address as the client (behind a trusted proxy only)."""
    access_log: bool = False
    on_rate_limited: Callable[[str], None] | None = None
    """Called with the client kind (`key` / `ip`) of each refused request (the metrics counter)."""


def _client_id(scope: Scope, settings: IngressSettings) -> tuple[str, str]:
    """(kind, identity) the rate limit counts against: a valid API key's fingerprint, else the client IP."""
    keys = settings.api_keys
    token = bearer_token(_header(scope, b"authorization"))
    if keys and token and key_matches(token, keys):
        return "key", "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    ip = ""
    if settings.trust_forwarded_for:
        ip = (_header(scope, b"x-forwarded-for") or "").split(",")[0].strip()
    if not ip:
        client = scope.get("client")
        ip = client[0] if client else "unknown"
    return "ip", "ip:" + ip


async def _send_429(send: Send, retry_after: int, limit: int) -> None:
    body = envelope(
        f"Rate limit reached: at most {limit} requests at once; retry in {retry_after} s.",
        "rate_limit_error",
        None,
        "rate_limit_exceeded",
    )
    data = json.dumps(body).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"retry-after", str(retry_after).encode()),
            (b"x-ratelimit-limit-requests", str(limit).encode()),
            (b"x-ratelimit-remaining-requests", b"0"),
        ],
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": data, "more_body": False}
    await send(start)
    await send(end)


class RequestContextMiddleware:
    """ASGI middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: IngressSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = cast(HTTPScope, scope)
        ctx = request_context(scope)
        settings = self.settings
        with bind_request(ctx):
            limiter = settings.limiter
            if limiter is not None and scope["path"] not in EXEMPT_PATHS:
                kind, client = _client_id(scope, settings)
                decision = limiter.acquire(client)
                if not decision.allowed:
                    if settings.on_rate_limited is not None:
                        settings.on_rate_limited(kind)
                    log.info("rate limited %s %s (%s)", scope["method"], scope["path"], kind)
                    await _send_429(send, decision.retry_after_s, decision.limit)
                    return
            if not settings.access_log:
                await self.app(scope, receive, send)
                return
            await self._logged(scope, receive, send, ctx)

    async def _logged(self, scope: HTTPScope, receive: Receive, send: Send, ctx: RequestContext) -> None:
        started = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            client = scope.get("client")
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status["code"],
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status["code"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": client[0] if client else None,
                    "request_id": ctx.id,
                },
            )
