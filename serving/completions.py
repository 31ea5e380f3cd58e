"""Chat and text completions: turn a validated OpenAI request into engine calls, responses and logs.

Shared by both endpoints: resolve the model (and A/B arm), check the token budget, run the engine
(streamed or not), mirror the request to a shadow arm, record metrics and one request-log row per
served request. Clients get 4xx for anything they sent wrong; the engine's own failures are 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from serving.core import ServingCore
from serving.engine.base import (
    EngineError,
    GenerationChunk,
    GenerationRequest,
    PromptTooLongError,
    SamplingSettings,
)
from serving.errors import APIError, BadRequestError, InternalServerError, ServiceUnavailableError
from serving.protocol import ChatCompletionRequest, CompletionRequest, new_id, now_s
from serving.request_log import RequestRecord
from serving.router import Target

log = logging.getLogger("tuneloop.serving")

Endpoint = Literal["chat.completions", "completions"]
SERVED_BY_HEADER = "x-tuneloop-served-by"
REQUEST_ID_HEADER = "x-request-id"


@dataclass(slots=True)
class _Run:
    """Accumulated state of one request while it runs."""

    id: str
    endpoint: Endpoint
    target: Target
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    texts: dict[int, str] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    completion_tokens: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int = 0

    def add(self, chunk: GenerationChunk, index: int) -> None:
        if chunk.text and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.texts[index] = self.texts.get(index, "") + chunk.text
        self.completion_tokens[index] = chunk.completion_tokens
        if chunk.finish_reason:
            self.finish[index] = chunk.finish_reason

    @property
    def total_completion_tokens(self) -> int:
        return sum(self.completion_tokens.values())


@dataclass(slots=True)
class Prepared:
    """A request that passed validation and routing, ready to run."""

    id: str
    endpoint: Endpoint
    model: str
    target: Target
    shadow: Target | None
    requests: list[GenerationRequest]  # one per prompt
    n: int
    user: str | None
    prompt_log: str
    tags: dict[str, Any] | None
    stream: bool
    include_usage: bool
    prompt_tokens: int


class CompletionService:
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    # ------------------------------------------------------------------ prepare
    async def prepare(
        self, req: ChatCompletionRequest | CompletionRequest, user_header: str | None
    ) -> Prepared:
        if not self.core.ready:
            raise ServiceUnavailableError("The server is not ready (starting or draining).")
        user = req.user or user_header
        target, shadow = self.core.route(req.model, user)
        chat = isinstance(req, ChatCompletionRequest)
        endpoint: Endpoint = "chat.completions" if chat else "completions"
        rid = new_id("chatcmpl" if chat else "cmpl")
        lora = target.version.lora() if target.version else None
        requested = req.requested_max_tokens()
        max_len = self.core.engine.max_model_len
        if req.n > 1 and req.temperature == 0.0:
            raise BadRequestError(
                "n > 1 needs sampling: with temperature=0 every choice would be the same; "
                "set temperature > 0.",
                param="n",
                code="invalid_value",
            )
        if requested is not None and requested >= max_len:
            raise BadRequestError(
                f"max_tokens={requested} is larger than this model's context length ({max_len}).",
                param="max_tokens",
                code="invalid_value",
            )
        prompts: list[tuple[str | None, tuple[dict[str, str], ...] | None]]
        prompt_log: str
        if isinstance(req, ChatCompletionRequest):
            messages = req.engine_messages()
            prompts = [(None, messages)]
            prompt_log = json.dumps(list(messages), ensure_ascii=False)
            default_max = self.core.config.default_max_tokens
        else:
            prompts = [(p, None) for p in req.prompts()]
            texts = req.prompts()
            prompt_log = texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False)
            default_max = self.core.config.default_completion_max_tokens
        gen_requests: list[GenerationRequest] = []
        total_prompt_tokens = 0
        for i, (prompt, chat_messages) in enumerate(prompts):
            probe = GenerationRequest(
                request_id=f"{rid}-{i}",
                sampling=SamplingSettings(),
                prompt=prompt,
                messages=chat_messages,
                lora=lora,
            )
            prompt_tokens = await self.core.engine.count_prompt_tokens(probe)
            room = max_len - prompt_tokens
            if room <= 0:
                raise BadRequestError(
                    f"This model's maximum context length is {max_len} tokens; "
                    f"the prompt has {prompt_tokens}.",
                    param="messages" if chat else "prompt",
                    code="context_length_exceeded",
                )
            max_tokens = requested if requested is not None else min(default_max, room)
            if prompt_tokens + max_tokens > max_len:
                raise BadRequestError(
                    f"This model's maximum context length is {max_len} tokens; "
                    f"the prompt has {prompt_tokens} "
                    f"tokens and max_tokens is {max_tokens}. Reduce the prompt or max_tokens.",
                    param="max_tokens",
                    code="context_length_exceeded",
                )
            total_prompt_tokens += prompt_tokens
            sampling = SamplingSettings(
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                n=req.n,
                stop=req.stop_tuple(),
                seed=req.seed,
                presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty,
            )
            gen_requests.append(
                GenerationRequest(
                    request_id=f"{rid}-{i}",
                    sampling=sampling,
                    prompt=prompt,
                    messages=chat_messages,
                    lora=lora,
                )
            )
        return Prepared(
            id=rid,
            endpoint=endpoint,
            model=req.model,
            target=target,
            shadow=shadow,
            requests=gen_requests,
            n=req.n,
            user=user,
            prompt_log=prompt_log,
            tags=dict(req.metadata) if req.metadata else None,
            stream=req.stream,
            include_usage=req.include_usage(),
            prompt_tokens=total_prompt_tokens,
        )

    # ------------------------------------------------------------------ run
    async def _chunks(self, prep: Prepared, run: _Run) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """Engine chunks of every prompt, merged, with choice index = prompt_idx * n + choice."""
        if len(prep.requests) == 1:
            async for chunk in self.core.engine.generate(prep.requests[0]):
                run.prompt_tokens = chunk.prompt_tokens
                yield chunk.index, chunk
            return
        queue: asyncio.Queue[tuple[int, GenerationChunk] | BaseException | None] = asyncio.Queue()
        prompt_tokens: dict[int, int] = {}

        async def pump(p_idx: int, greq: GenerationRequest) -> None:
            try:
                async for chunk in self.core.engine.generate(greq):
                    prompt_tokens[p_idx] = chunk.prompt_tokens
                    await queue.put((p_idx * prep.n + chunk.index, chunk))
            except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
                await queue.put(exc)
            finally:
                await queue.put(None)

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(prep.requests)]
        remaining = len(tasks)
        try:
            while remaining:
                item = await queue.get()
                if item is None:
                    remaining -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                run.prompt_tokens = sum(prompt_tokens.values())
                yield item
        finally:
            for t in tasks:
                t.cancel()

    def _start_shadow(self, prep: Prepared) -> None:
        if prep.shadow is None:
            return
        shadow = prep.shadow
        lora = shadow.version.lora() if shadow.version else None
        shadow_prep = Prepared(
            id=prep.id.replace("-", "-shadow-", 1),
            endpoint=prep.endpoint,
            model=prep.model,
            target=shadow,
            shadow=None,
            requests=[
                GenerationRequest(
                    request_id=f"shadow-{r.request_id}",
                    sampling=r.sampling,
                    prompt=r.prompt,
                    messages=r.messages,
                    lora=lora,
                )
                for r in prep.requests
            ],
            n=prep.n,
            user=prep.user,
            prompt_log=prep.prompt_log,
            tags=prep.tags,
            stream=False,
            include_usage=False,
            prompt_tokens=prep.prompt_tokens,
        )

        async def run_shadow() -> None:
            with contextlib.suppress(Exception):
                await self.run_to_completion(shadow_prep, shadow_of=prep.id)

        asyncio.get_running_loop().create_task(run_shadow())

    async def run_to_completion(self, prep: Prepared, shadow_of: str | None = None) -> dict[str, Any]:
        """Run a non-streaming request; returns the OpenAI response body."""
        if shadow_of is None:
            self._start_shadow(prep)
        run = _Run(prep.id, prep.endpoint, prep.target)
        run.prompt_tokens = prep.prompt_tokens
        status, error = 200, None
        try:
            with self.core.lease(prep.target):
                async for index, chunk in self._chunks(prep, run):
                    run.add(chunk, index)
        except PromptTooLongError as exc:
            status, error = 400, str(exc)
            raise BadRequestError(str(exc), param="messages", code="context_length_exceeded") from exc
        except APIError as exc:
            status, error = exc.status_code, exc.message
            raise
        except EngineError as exc:
            status, error = 500, str(exc)
            raise InternalServerError(f"The engine failed: {exc}") from exc
        except ValueError as exc:  # the engine refused the request's parameters: the client's to fix
            status, error = 400, str(exc)
            raise BadRequestError(str(exc), code="invalid_value") from exc
        except asyncio.CancelledError:
            status, error = 499, "client disconnected"
            raise
        except Exception as exc:
            status, error = 500, repr(exc)
            log.exception("request %s failed", prep.id)
            raise InternalServerError("The server failed while generating.") from exc
        finally:
            self._finish(prep, run, status, error, shadow_of)
        return self._body(prep, run)

    async def stream(self, prep: Prepared) -> AsyncIterator[bytes]:
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
        self._start_shadow(prep)
        run = _Run(prep.id, prep.endpoint, prep.target)
        run.prompt_tokens = prep.prompt_tokens
        created = now_s()
        model = prep.target.served_by
        status, error = 200, None
        obj = "chat.completion.chunk" if prep.endpoint == "chat.completions" else "text_completion"
        try:
            with self.core.lease(prep.target):
                if prep.endpoint == "chat.completions":
                    for i in range(prep.n * len(prep.requests)):
                        yield _sse(
                            {
                                "id": prep.id,
                                "object": obj,
                                "created": created,
                                "model": model,
                                "choices": [
                                    {
                                        "index": i,
                                        "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                async for index, chunk in self._chunks(prep, run):
                    run.add(chunk, index)
                    if not chunk.text and not chunk.finish_reason:
                        continue
                    if prep.endpoint == "chat.completions":
                        delta: dict[str, Any] = {"content": chunk.text} if chunk.text else {}
                        choice = {
                            "index": index,
                            "delta": delta,
                            "logprobs": None,
                            "finish_reason": chunk.finish_reason,
                        }
                    else:
                        choice = {
                            "index": index,
                            "text": chunk.text,
                            "logprobs": None,
                            "finish_reason": chunk.finish_reason,
                        }
                    yield _sse(
                        {
                            "id": prep.id,
                            "object": obj,
                            "created": created,
                            "model": model,
                            "choices": [choice],
                        }
                    )
            if prep.include_usage:
                yield _sse(
                    {
                        "id": prep.id,
                        "object": obj,
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(run),
                    }
                )
            yield b"data: [DONE]\n\n"
        except PromptTooLongError as exc:
            status, error = 400, str(exc)
            yield _sse(BadRequestError(str(exc), code="context_length_exceeded").to_body())
        except APIError as exc:
            status, error = exc.status_code, exc.message
            yield _sse(exc.to_body())
        except EngineError as exc:
            status, error = 500, str(exc)
            yield _sse(InternalServerError(f"The engine failed: {exc}").to_body())
        except ValueError as exc:
            status, error = 400, str(exc)
            yield _sse(BadRequestError(str(exc), code="invalid_value").to_body())
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client disconnected"
            raise
        except Exception as exc:
            status, error = 500, repr(exc)
            log.exception("stream %s failed", prep.id)
            yield _sse(InternalServerError("The server failed while generating.").to_body())
        finally:
            self._finish(prep, run, status, error, None)

    # ------------------------------------------------------------------ bookkeeping
    def _finish(
        self, prep: Prepared, run: _Run, status: int, error: str | None, shadow_of: str | None
    ) -> None:
        end = time.perf_counter()
        served_by = prep.target.served_by
        m = self.core.metrics
        e2e = end - run.started
        ttft = (run.first_token_at - run.started) if run.first_token_at else None
        ctoks = run.total_completion_tokens
        m.requests.labels(served_by, prep.endpoint, str(status)).inc()
        if status >= 400:
            m.errors.labels(served_by, "client" if status < 500 else "server").inc()
        m.prompt_tokens.labels(served_by).inc(run.prompt_tokens)
        m.completion_tokens.labels(served_by).inc(ctoks)
        m.e2e.labels(served_by).observe(e2e)
        if ttft is not None:
            m.ttft.labels(served_by).observe(ttft)
            per_choice = max(run.completion_tokens.values(), default=0)
            if per_choice > 1 and run.first_token_at is not None:
                m.tpot.labels(served_by).observe((end - run.first_token_at) / (per_choice - 1))
        n_choices = prep.n * len(prep.requests)
        response = (
            run.texts.get(0)
            if n_choices == 1
            else json.dumps([run.texts.get(i, "") for i in range(n_choices)], ensure_ascii=False)
        )
        finish = run.finish.get(0)
        self.core.log_record(
            RequestRecord(
                id=prep.id if shadow_of is None else prep.id,
                created_at=datetime.now(UTC),
                endpoint=prep.endpoint,
                model_requested=prep.model,
                served_name=prep.target.served_name,
                served_version=prep.target.version_hash,
                experiment=prep.target.experiment,
                arm=prep.target.arm,
                shadow_of=shadow_of,
                user_id=prep.user,
                prompt=prep.prompt_log,
                response=response,
                status_code=status,
                error=error,
                stream=prep.stream,
                latency_ms=e2e * 1000.0,
                ttft_ms=ttft * 1000.0 if ttft is not None else None,
                prompt_tokens=run.prompt_tokens,
                completion_tokens=ctoks,
                finish_reason=finish,
                tags=prep.tags,
            )
        )

    def _body(self, prep: Prepared, run: _Run) -> dict[str, Any]:
        n_choices = prep.n * len(prep.requests)
        model = prep.target.served_by
        if prep.endpoint == "chat.completions":
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": run.texts.get(i, "")},
                    "logprobs": None,
                    "finish_reason": run.finish.get(i, "stop"),
                }
                for i in range(n_choices)
            ]
            obj = "chat.completion"
        else:
            choices = [
                {
                    "index": i,
                    "text": run.texts.get(i, ""),
                    "logprobs": None,
                    "finish_reason": run.finish.get(i, "stop"),
                }
                for i in range(n_choices)
            ]
            obj = "text_completion"
        return {
            "id": prep.id,
            "object": obj,
            "created": now_s(),
            "model": model,
            "choices": choices,
            "usage": _usage(run),
            "system_fingerprint": None,
        }


def _usage(run: _Run) -> dict[str, int]:
    c = run.total_completion_tokens
    return {"prompt_tokens": run.prompt_tokens, "completion_tokens": c, "total_tokens": run.prompt_tokens + c}


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
