"""Build the Litestar application (OpenAI API + admin API + health/metrics) around a `ServingCore`.

Used as the Ray Serve ingress of each model replica (see `serving.app`) and directly in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler

from serving.api.errors import handle_api_error, handle_domain_error, handle_http_exception, handle_unexpected
from serving.api.openai import ROUTES, FeedbackSink
from serving.completions import CompletionService
from serving.core import ServingCore
from serving.errors import APIError

DEFAULT_MAX_BODY = 4 * 1024 * 1024


def build_http_app(
    core: ServingCore,
    *,
    feedback: FeedbackSink | None = None,
    admin_routes: Sequence[BaseRouteHandler] = (),
    admin_state: dict[str, Any] | None = None,
    api_keys: Sequence[str] = (),
    request_log_stats: Callable[[], dict[str, int]] | None = None,
    domain_errors: Sequence[type[Exception]] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY,
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Litestar:
    handlers: dict[Any, Any] = {
        APIError: handle_api_error,
        HTTPException: handle_http_exception,
        Exception: handle_unexpected,
    }
    for exc_type in domain_errors:
        handlers[exc_type] = handle_domain_error
    state = {
        "core": core,
        "completions": CompletionService(core),
        "feedback": feedback,
        "api_keys": frozenset(api_keys),
        "request_log_stats": request_log_stats,
        **(admin_state or {}),
    }
    return Litestar(
        route_handlers=[*ROUTES, *admin_routes],
        exception_handlers=handlers,
        state=State(state),
        request_max_body_size=max_body_bytes,
        on_shutdown=list(on_shutdown),
        debug=False,
    )
