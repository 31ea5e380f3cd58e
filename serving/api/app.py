"""Build the Litestar application (OpenAI API + admin API + health/metrics) around a `ServingCore`.

Used as the Ray Serve ingress of each model replica (see `serving.app`) and directly in tests.
Everything a route needs is a typed dependency (`Provide`), named by its parameter:

| parameter | type | |
|---|---|---|
| `core` | `ServingCore` | routing, engine, metrics |
| `completions` | `CompletionService` | chat and text completions |
| `limits` | `RequestLimits` | messages / prompt characters per request |
| `feedback_sink` | `FeedbackSink \\| None` | where `POST /v1/feedback` goes (None: 503) |
| `log_stats` | `LogStats \\| None` | the request log's counters for `/metrics` |
| `admin` | `Admin` | registry, admin token, import roots (only with the admin API) |

The inference routes sit behind `InferenceKeyGuard`, the admin routes behind `AdminTokenGuard`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.types import ControllerRouterHandler

from serving.api.admin import ADMIN_ROUTES, VLLM_ROUTES, Admin, AdminTokenGuard
from serving.api.errors import handle_error
from serving.api.ingress import IngressSettings, RequestContextMiddleware, add_request_id_header
from serving.api.openai import (
    INFERENCE_ROUTES,
    SERVICE_ROUTES,
    FeedbackSink,
    InferenceKeyGuard,
    LogStats,
    RequestLimits,
)
from serving.api.openapi import BEARER, openapi_config
from serving.api.ratelimit import TokenBucketLimiter
from serving.completions import CompletionService
from serving.config import RateLimitSettings
from serving.core import ServingCore

__all__ = ["Admin", "RequestLimits", "build_http_app"]


def _value(value: object) -> Provide:
    """A dependency that is always `value` (built once, with the app)."""
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def build_http_app(
    core: ServingCore,
    *,
    feedback: FeedbackSink | None = None,
    admin: Admin | None = None,
    api_keys: Sequence[str] = (),
    request_log_stats: LogStats | None = None,
    limits: RequestLimits | None = None,
    rate_limit: RateLimitSettings | None = None,
    access_log: bool = False,
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Litestar:
    """The app. `api_keys` empty = open inference API; `rate_limit` None/disabled = no rate limit;
    `admin` None = no admin API; `limits` None = `RequestLimits()` (the `ServingConfig` defaults)."""
    limits = limits or RequestLimits()
    keys = frozenset(api_keys)
    dependencies = {
        "core": _value(core),
        "completions": _value(CompletionService(core)),
        "limits": _value(limits),
        "feedback_sink": _value(feedback),
        "log_stats": _value(request_log_stats),
    }
    routes: list[ControllerRouterHandler] = [
        *SERVICE_ROUTES,
        Router("/", route_handlers=INFERENCE_ROUTES, guards=[InferenceKeyGuard(keys)], security=[BEARER]),
    ]
    if admin is not None:
        dependencies["admin"] = _value(admin)
        routes.append(
            Router("/", route_handlers=ADMIN_ROUTES, guards=[AdminTokenGuard(admin)], security=[BEARER])
        )
        routes.append(Router("/", route_handlers=VLLM_ROUTES, security=[BEARER]))
    ingress = IngressSettings(
        api_keys=keys,
        limiter=TokenBucketLimiter(rate_limit) if rate_limit and rate_limit.enabled else None,
        trust_forwarded_for=bool(rate_limit and rate_limit.trust_forwarded_for),
        access_log=access_log,
        on_rate_limited=lambda kind: core.metrics.rate_limited.labels(kind=kind).inc(),
    )
    return Litestar(
        route_handlers=routes,
        dependencies=dependencies,
        exception_handlers={Exception: handle_error},
        middleware=[DefineMiddleware(RequestContextMiddleware, settings=ingress)],
        before_send=[add_request_id_header],
        request_max_body_size=limits.max_body_bytes,
        openapi_config=openapi_config(),
        on_shutdown=list(on_shutdown),
        debug=False,
    )
