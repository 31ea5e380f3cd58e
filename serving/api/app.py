"""Build the Litestar application (OpenAI API + admin API + health/metrics) around a `ServingCore`.

Used as the Ray Serve ingress of each model replica (see `serving.app`) and directly in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler

from serving.api.errors import handle_error
from serving.api.ingress import RequestContextMiddleware, add_request_id_header
from serving.api.openai import ROUTES, FeedbackSink
from serving.api.openapi import openapi_config
from serving.api.ratelimit import TokenBucketLimiter
from serving.completions import CompletionService
from serving.config import RateLimitSettings
from serving.core import ServingCore

DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_MESSAGES = 256
DEFAULT_MAX_PROMPT_CHARS = 200_000


def build_http_app(
    core: ServingCore,
    *,
    feedback: FeedbackSink | None = None,
    admin_routes: Sequence[BaseRouteHandler] = (),
    admin_state: dict[str, Any] | None = None,
    api_keys: Sequence[str] = (),
    request_log_stats: Callable[[], dict[str, int]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    rate_limit: RateLimitSettings | None = None,
    access_log: bool = False,
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Litestar:
    """The app. `api_keys` empty = open inference API; `rate_limit` None/disabled = no rate limit."""
    state = {
        "core": core,
        "completions": CompletionService(core),
        "feedback": feedback,
        "api_keys": frozenset(api_keys),
        "request_log_stats": request_log_stats,
        "max_messages": max_messages,
        "max_prompt_chars": max_prompt_chars,
        "rate_limiter": TokenBucketLimiter(rate_limit) if rate_limit and rate_limit.enabled else None,
        "trust_forwarded_for": bool(rate_limit and rate_limit.trust_forwarded_for),
        "access_log": access_log,
        **(admin_state or {}),
    }
    return Litestar(
        route_handlers=[*ROUTES, *admin_routes],
        exception_handlers={Exception: handle_error},
        state=State(state),
        middleware=[RequestContextMiddleware],
        before_send=[add_request_id_header],
        request_max_body_size=max_body_bytes,
        openapi_config=openapi_config(),
        on_shutdown=list(on_shutdown),
        debug=False,
    )
