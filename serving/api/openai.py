"""OpenAI-compatible routes: chat completions, completions, models, feedback, health, metrics.

Routes are thin: parse + validate the body (400 naming the field on failure), then hand over to
`CompletionService`. Every completion response carries `x-tuneloop-served-by: name@version` and an
id that `POST /v1/feedback` accepts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Protocol, TypeVar

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import PathParameter
from litestar.response import Stream
from pydantic import BaseModel, ValidationError

from serving.api.errors import validation_error
from serving.api.ingress import adopt_request_id, bearer_token, key_matches
from serving.completions import REQUEST_ID_HEADER, SERVED_BY_HEADER, CompletionService
from serving.core import ServingCore
from serving.errors import AuthenticationError, BadRequestError, NotFoundError, ServiceUnavailableError
from serving.metrics import CONTENT_TYPE
from serving.protocol import ChatCompletionRequest, CompletionRequest, FeedbackRequest, now_s

USER_HEADER = "x-tuneloop-user"
T = TypeVar("T", bound=BaseModel)


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


class EventStream(Stream):
    """A Stream whose own media type wins over the route's default (JSON) one."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


def _core(state: State) -> ServingCore:
    return state["core"]


def check_inference_key(request: Request[Any, Any, Any]) -> None:
    """401 unless the bearer token is one of the inference keys (none configured = open API).

    The admin token is not an inference key unless `admin_token_as_api_key` put it in the set.
    """
    keys: frozenset[str] = request.app.state.get("api_keys", frozenset())
    if not keys:
        return
    if not key_matches(bearer_token(request.headers.get("authorization")), keys):
        raise AuthenticationError("Incorrect or missing API key. Send 'Authorization: Bearer <key>'.")


def check_request_size(state: State, req: ChatCompletionRequest | CompletionRequest) -> None:
    """400 for more messages or prompt characters than this server accepts (before any tokenization)."""
    max_chars: int = state.get("max_prompt_chars", 200_000)
    if isinstance(req, ChatCompletionRequest):
        max_messages: int = state.get("max_messages", 256)
        if len(req.messages) > max_messages:
            raise BadRequestError(
                f"Too many messages: {len(req.messages)} (this server accepts at most {max_messages}).",
                param="messages",
                code="too_many_messages",
            )
        chars, param = sum(len(m.text()) for m in req.messages), "messages"
    else:
        chars, param = req.prompt_chars(), "prompt"
    if chars > max_chars:
        raise BadRequestError(
            f"The prompt is too long: {chars} characters (this server accepts at most {max_chars}).",
            param=param,
            code="prompt_too_long",
        )


async def _parse(request: Request[Any, Any, Any], model: type[T]) -> T:
    body = await request.body()
    try:
        return model.model_validate_json(body or b"")
    except ValidationError as exc:
        raise validation_error(exc) from exc


async def _complete(request: Request[Any, Any, Any], req: ChatCompletionRequest | CompletionRequest) -> Any:
    check_request_size(request.app.state, req)
    service: CompletionService = request.app.state["completions"]
    prep = await service.prepare(req, request.headers.get(USER_HEADER))
    adopt_request_id(request.scope, prep.id)
    headers = {SERVED_BY_HEADER: prep.target.served_by, REQUEST_ID_HEADER: prep.id}
    if prep.target.experiment:
        headers["x-tuneloop-experiment"] = prep.target.experiment
    if prep.stream:
        return EventStream(
            service.stream(prep),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    body = await service.run_to_completion(prep)
    return Response(body, headers=headers, media_type="application/json")


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Any:
    check_inference_key(request)
    return await _complete(request, await _parse(request, ChatCompletionRequest))


@post("/v1/completions", status_code=200)
async def completions(request: Request[Any, Any, Any]) -> Any:
    check_inference_key(request)
    return await _complete(request, await _parse(request, CompletionRequest))


def _model_cards(core: ServingCore) -> list[dict[str, Any]]:
    created = now_s()
    cards = []
    for model_id, kind, version in core.snapshot.model_names():
        cards.append(
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": "tuneloop",
                "root": core.config.base_id,
                "parent": None if kind == "base" else core.config.base_id,
                "kind": kind,
                "version": version,
            }
        )
    return cards


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    check_inference_key(request)
    return {"object": "list", "data": _model_cards(_core(state))}


@get("/v1/models/{model_id:path}")
async def get_model(
    request: Request[Any, Any, Any], state: State, model_id: Annotated[str, PathParameter()]
) -> dict[str, Any]:
    check_inference_key(request)
    model_id = model_id.lstrip("/")
    for card in _model_cards(_core(state)):
        if card["id"] == model_id:
            return card
    raise NotFoundError(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")


@post("/v1/feedback", status_code=200)
async def feedback(request: Request[Any, Any, Any]) -> dict[str, Any]:
    check_inference_key(request)
    fb = await _parse(request, FeedbackRequest)
    sink: FeedbackSink | None = request.app.state.get("feedback")
    if sink is None:
        raise ServiceUnavailableError("Feedback storage is not configured on this server.")
    await asyncio.to_thread(
        sink.record_feedback,
        fb.id,
        rating=fb.rating,
        thumbs=fb.thumbs,
        correction=fb.correction,
        source=fb.source,
        tags=fb.tags,
    )
    return {"object": "feedback", "id": fb.id, "status": "recorded"}


@get("/health")
async def health(state: State) -> Response[dict[str, Any]]:
    core = _core(state)
    try:
        await core.engine.check_health()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Response({"status": "unhealthy", "reason": str(exc)}, status_code=503)
    return Response({"status": "ok", "replica": core.replica_id}, status_code=200)


@get("/ready")
async def ready(state: State) -> Response[dict[str, Any]]:
    core = _core(state)
    body = {
        "ready": core.ready,
        "replica": core.replica_id,
        "generation": core.snapshot.generation,
        "loaded_adapters": core.loaded_keys(),
        "failed_adapters": core.failed_keys(),
    }
    return Response(body, status_code=200 if core.ready else 503)


@get("/metrics", media_type=CONTENT_TYPE)
async def metrics(state: State) -> Response[bytes]:
    core = _core(state)
    log_stats = state.get("request_log_stats")
    if callable(log_stats):
        stats = log_stats()
        core.metrics.log_pending.set(stats.get("pending", 0))
        core.metrics.log_dropped.set(stats.get("dropped", 0))
        core.metrics.log_spilled.set(stats.get("spilled", 0))
    return Response(core.metrics.render(), media_type=CONTENT_TYPE)


ROUTES = [chat_completions, completions, list_models, get_model, feedback, health, ready, metrics]
