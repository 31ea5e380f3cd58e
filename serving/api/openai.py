"""OpenAI-compatible routes: chat completions, completions, models, feedback; health, readiness, metrics.

Routes are thin and typed: the body arrives as a validated request model (`serving.api.bodies.JSONBody`:
a 400 naming the field otherwise), the services arrive as dependencies (`Provide`, see
`serving.api.app`), the inference key is checked by a guard before anything is parsed, and the answer
is a response model (or the SSE stream). Every completion response carries
`x-tuneloop-served-by: name@version`, `x-tuneloop-replica` (which replica answered) and an id that
`POST /v1/feedback` accepts. A `serve_multiplexed_model_id` header (adapter-aware routing) that
contradicts the body's model is refused (`serving.multiplex.check_routing_header`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter
from litestar.response import Stream
from pydantic import BaseModel

from serving.api.bodies import JSONBody
from serving.api.errors import ERROR_RESPONSES
from serving.api.ingress import adopt_request_id, bearer_token, key_matches
from serving.completions import REQUEST_ID_HEADER, SERVED_BY_HEADER, CompletionService
from serving.config import ServingConfig
from serving.core import ServingCore
from serving.errors import AuthenticationError, BadRequestError, NotFoundError, ServiceUnavailableError
from serving.metrics import CONTENT_TYPE
from serving.multiplex import check_routing_header, routing_header
from serving.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    now_s,
)

__all__ = [
    "INFERENCE_ROUTES",
    "REPLICA_HEADER",
    "ROUTES",
    "SERVICE_ROUTES",
    "USER_HEADER",
    "EventStream",
    "Healthy",
    "Readiness",
    "Unhealthy",
    "FeedbackSink",
    "InferenceKeyGuard",
    "LogStats",
    "RequestLimits",
]

USER_HEADER = "x-tuneloop-user"
REPLICA_HEADER = "x-tuneloop-replica"
"""The replica that answered a completion (its `replica_id`, as in `/ready` and `/admin/replicas`)."""

LogStats = Callable[[], dict[str, int]]
"""The request log's counters (`pending`, `dropped`, `spilled`, ...) for `/metrics`."""


@runtime_checkable  # Litestar checks a dependency's value against the parameter's type
class FeedbackSink(Protocol):
    def record_feedback(
        self,
        request_id: str,
        *,
        rating: float | None,
        thumbs: int | None,
        correction: str | None,
        source: str | None,
        tags: dict[str, Any] | None = None,
    ) -> None: ...


def _config_default(name: str) -> int:
    default = ServingConfig.model_fields[name].default
    assert isinstance(default, int)
    return default


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """How much one request may carry; the defaults are `ServingConfig`'s (stated there, once)."""

    max_body_bytes: int = _config_default("max_body_bytes")
    max_messages: int = _config_default("max_messages")
    max_prompt_chars: int = _config_default("max_prompt_chars")

    @classmethod
    def from_config(cls, config: ServingConfig) -> RequestLimits:
        return cls(config.max_body_bytes, config.max_messages, config.max_prompt_chars)

    def check(self, req: ChatCompletionRequest | CompletionRequest) -> None:
        """400 for more messages or prompt characters than allowed (before any tokenization)."""
        if isinstance(req, ChatCompletionRequest):
            if len(req.messages) > self.max_messages:
                raise BadRequestError(
                    f"Too many messages: {len(req.messages)} "
                    f"(this server accepts at most {self.max_messages}).",
                    param="messages",
                    code="too_many_messages",
                )
            chars, param = sum(len(m.text()) for m in req.messages), "messages"
        else:
            chars, param = req.prompt_chars(), "prompt"
        if chars > self.max_prompt_chars:
            raise BadRequestError(
                f"The prompt is too long: {chars} characters "
                f"(this server accepts at most {self.max_prompt_chars}).",
                param=param,
                code="prompt_too_long",
            )


class InferenceKeyGuard:
    """401 unless the bearer token is one of the inference keys (none configured = open API).

    The admin token is not an inference key unless `admin_token_as_api_key` put it in the set.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(keys)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self  # immutable; Litestar deep-copies routers, and the registry cannot be copied

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if self.keys and not key_matches(bearer_token(connection.headers.get("authorization")), self.keys):
            raise AuthenticationError("Incorrect or missing API key. Send 'Authorization: Bearer <key>'.")


class EventStream(Stream):
    """A Stream whose own media type wins over the route's default (JSON) one."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


def _completion_responses(
    model: type[ChatCompletionResponse | CompletionResponse],
) -> dict[int, ResponseSpec]:
    description = "The completion (with `stream: true`: server-sent events of chunks, ending `data: [DONE]`)."
    return {200: ResponseSpec(model, description=description, generate_examples=False), **ERROR_RESPONSES}


async def _complete(
    request: Request[Any, Any, Any],
    req: ChatCompletionRequest | CompletionRequest,
    completions: CompletionService,
    limits: RequestLimits,
) -> Response[ChatCompletionResponse | CompletionResponse] | EventStream:
    limits.check(req)
    core = completions.core
    check_routing_header(core.snapshot, routing_header(request.headers), req.model)
    prep = await completions.prepare(req, request.headers.get(USER_HEADER))
    adopt_request_id(request.scope, prep.id)
    headers = {
        SERVED_BY_HEADER: prep.target.served_by,
        REQUEST_ID_HEADER: prep.id,
        REPLICA_HEADER: core.replica_id,
    }
    if prep.target.experiment:
        headers["x-tuneloop-experiment"] = prep.target.experiment
    if prep.stream:
        return EventStream(
            completions.stream(prep),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    body = await completions.run_to_completion(prep)
    return Response(body, headers=headers, media_type="application/json")


@post(
    "/v1/chat/completions",
    dto=JSONBody[ChatCompletionRequest],
    return_dto=None,
    status_code=200,
    responses=_completion_responses(ChatCompletionResponse),
)
async def chat_completions(
    request: Request[Any, Any, Any],
    data: ChatCompletionRequest,
    completions: CompletionService,
    limits: RequestLimits,
) -> Response[ChatCompletionResponse | CompletionResponse] | EventStream:
    return await _complete(request, data, completions, limits)


@post(
    "/v1/completions",
    dto=JSONBody[CompletionRequest],
    return_dto=None,
    status_code=200,
    responses=_completion_responses(CompletionResponse),
)
async def text_completions(
    request: Request[Any, Any, Any],
    data: CompletionRequest,
    completions: CompletionService,
    limits: RequestLimits,
) -> Response[ChatCompletionResponse | CompletionResponse] | EventStream:
    return await _complete(request, data, completions, limits)


def _model_cards(core: ServingCore) -> list[ModelCard]:
    created = now_s()
    base = core.config.base_id
    return [
        ModelCard(
            id=model_id,
            created=created,
            root=base,
            parent=None if kind == "base" else base,
            kind=kind,
            version=version,
        )
        for model_id, kind, version in core.snapshot.model_names()
    ]


@get("/v1/models", responses=ERROR_RESPONSES)
async def list_models(core: ServingCore) -> ModelList:
    return ModelList(data=_model_cards(core))


@get("/v1/models/{model_id:path}", responses=ERROR_RESPONSES)
async def get_model(core: ServingCore, model_id: Annotated[str, PathParameter()]) -> ModelCard:
    model_id = model_id.lstrip("/")
    for card in _model_cards(core):
        if card.id == model_id:
            return card
    raise NotFoundError(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")


@post(
    "/v1/feedback", dto=JSONBody[FeedbackRequest], return_dto=None, status_code=200, responses=ERROR_RESPONSES
)
async def feedback(data: FeedbackRequest, feedback_sink: FeedbackSink | None) -> FeedbackResponse:
    if feedback_sink is None:
        raise ServiceUnavailableError("Feedback storage is not configured on this server.")
    await asyncio.to_thread(
        feedback_sink.record_feedback,
        data.id,
        rating=data.rating,
        thumbs=data.thumbs,
        correction=data.correction,
        source=data.source,
        tags=data.tags,
    )
    return FeedbackResponse(id=data.id)


class Healthy(BaseModel):
    status: Literal["ok"] = "ok"
    replica: str


class Unhealthy(BaseModel):
    status: Literal["unhealthy"] = "unhealthy"
    reason: str


class Readiness(BaseModel):
    ready: bool
    replica: str
    generation: int
    """The registry generation this replica has applied."""
    loaded_adapters: list[str]
    failed_adapters: dict[str, str]
    """Versions this replica refused -> why."""


@get(
    "/health",
    responses={
        200: ResponseSpec(Healthy, description="The engine answers."),
        503: ResponseSpec(Unhealthy, description="The engine failed its health check."),
    },
)
async def health(core: ServingCore) -> Response[Healthy | Unhealthy]:
    try:
        await core.engine.check_health()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Response(Unhealthy(reason=str(exc)), status_code=503)
    return Response(Healthy(replica=core.replica_id), status_code=200)


@get("/ready", responses={503: ResponseSpec(Readiness, description="Starting or draining.")})
async def ready(core: ServingCore) -> Response[Readiness]:
    report = Readiness(
        ready=core.ready,
        replica=core.replica_id,
        generation=core.snapshot.generation,
        loaded_adapters=core.loaded_keys(),
        failed_adapters=core.failed_keys(),
    )
    return Response(report, status_code=200 if core.ready else 503)


@get("/metrics", media_type=CONTENT_TYPE)
async def metrics(core: ServingCore, log_stats: LogStats | None) -> Response[bytes]:
    if log_stats is not None:
        stats = log_stats()
        core.metrics.log_pending.set(stats.get("pending", 0))
        core.metrics.log_dropped.set(stats.get("dropped", 0))
        core.metrics.log_spilled.set(stats.get("spilled", 0))
    return Response(core.metrics.render(), media_type=CONTENT_TYPE)


INFERENCE_ROUTES = [chat_completions, text_completions, list_models, get_model, feedback]
"""Behind the inference key (`InferenceKeyGuard`)."""
SERVICE_ROUTES = [health, ready, metrics]
"""Open: probes and Prometheus."""
ROUTES = [*INFERENCE_ROUTES, *SERVICE_ROUTES]
"""Every route of this module."""
