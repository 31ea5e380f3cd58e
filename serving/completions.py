"""Chat and text completions: turn a validated OpenAI request into engine calls, responses and logs.

Shared by both endpoints: resolve the model (and A/B arm), check the token budget, run the engine
(streamed or not), mirror the request to a shadow arm, record metrics and one request-log row per
served request. Clients get 4xx for anything they sent wrong; the engine's own failures are 5xx.

Beyond plain text: `response_format` and forced tool choices become a `StructuredOutput` (a JSON schema the
engine's grammar backend enforces); tool calls are read back from the answer (a named function: the
answer is its arguments; "required": vLLM's `[{"name", "parameters"}]` array; "auto": the engine's tool
parser) and shaped as OpenAI's `tool_calls`, streamed as OpenAI's deltas: a named function's arguments
and "required" calls (vLLM's own incremental reading of the array) as they are generated; "auto" calls
when the choice ends (the tool parser reads the whole answer). Log-probabilities come back in OpenAI's chat
and completions shapes; completions `echo` returns the prompt (and its log-probabilities) before the
answer, and only the prompt with `max_tokens: 0`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from serving.api.errors import api_error
from serving.core import ServingCore
from serving.engine.base import (
    GenerationChunk,
    GenerationRequest,
    SamplingSettings,
    StructuredOutput,
    TokenLogprob,
)
from serving.errors import APIError, BadRequestError, ServiceUnavailableError
from serving.protocol import (
    CalledFunction,
    ChatChoice,
    ChatChoiceMessage,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    ChatToolCall,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    NamedToolChoice,
    TopLogprob,
    Usage,
    new_id,
    now_s,
)
from serving.request_log import RequestRecord
from serving.router import Target

log = logging.getLogger("tuneloop.serving")

Endpoint = Literal["chat.completions", "completions"]
ToolMode = Literal["none", "auto", "required", "named"]
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
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    prompts: dict[int, tuple[str, list[TokenLogprob] | None]] = field(default_factory=dict)
    tool_calls: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    echo_only: bool = False

    def add(self, chunk: GenerationChunk, index: int) -> None:
        if chunk.prompt_text is not None and index not in self.prompts:
            self.prompts[index] = (chunk.prompt_text, chunk.prompt_logprobs)
        if chunk.finish_reason:
            self.finish[index] = "length" if self.echo_only else chunk.finish_reason
        if self.echo_only:  # max_tokens=0: the one token generated is not part of the answer
            self.completion_tokens[index] = 0
            return
        if chunk.text and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.texts[index] = self.texts.get(index, "") + chunk.text
        self.completion_tokens[index] = chunk.completion_tokens
        if chunk.logprobs:
            self.logprobs.setdefault(index, []).extend(chunk.logprobs)

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
    tool_mode: ToolMode = "none"
    tool_name: str | None = None  # the named function
    tools: tuple[dict[str, Any], ...] | None = None
    top_logprobs: int | None = None  # chat: alternatives per token; completions: `logprobs`
    echo: bool = False
    echo_only: bool = False  # completions echo with max_tokens=0
    response_format_log: str | None = None
    tools_log: str | None = None

    @property
    def prompt_param(self) -> str:
        """The request field that holds the prompt (named by context-length errors)."""
        return "messages" if self.endpoint == "chat.completions" else "prompt"


class CompletionService:
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    # ------------------------------------------------------------------ prepare
    async def prepare(
        self, req: ChatCompletionRequest | CompletionRequest, user_header: str | None
    ) -> Prepared:
        """Validate `req` against the engine (context length, tools), route it and build one engine request
        per prompt. Raises the client's `APIError`s (400 / 503)."""
        if not self.core.ready:
            raise ServiceUnavailableError("The server is not ready (starting or draining).")
        user = req.user or user_header
        target, shadow = self.core.route(req.model, user)
        chat = isinstance(req, ChatCompletionRequest)
        rid = new_id("chatcmpl" if chat else "cmpl")
        max_len = self.core.engine.max_model_len
        requested = req.requested_max_tokens()
        if requested is not None and requested >= max_len:
            raise BadRequestError(
                f"max_tokens={requested} is larger than this model's context length ({max_len}).",
                param="max_tokens",
                code="invalid_value",
            )
        shape = (
            self._chat_shape(req) if isinstance(req, ChatCompletionRequest) else self._completion_shape(req)
        )
        if shape.structured is not None:
            _check_constrainable(req, shape.structured)
        if shape.echo_only:
            requested = 1  # generate one token (vLLM needs one) and answer only the prompt
        lora = target.version.lora() if target.version else None
        gen_requests: list[GenerationRequest] = []
        total_prompt_tokens = 0
        for i, (prompt, chat_messages) in enumerate(shape.prompts):
            probe = GenerationRequest(
                request_id=f"{rid}-{i}",
                sampling=SamplingSettings(),
                prompt=prompt if isinstance(prompt, str) else None,
                prompt_token_ids=tuple(prompt) if isinstance(prompt, list) else None,
                messages=chat_messages,
                lora=lora,
                tools=shape.tools,
                priority=req.priority,
                truncate_prompt_tokens=req.truncate_prompt_tokens,
                truncation_side=req.truncation_side or "left",
                **shape.template,
            )
            prompt_tokens = await self.core.engine.count_prompt_tokens(probe)
            max_tokens = _max_tokens(prompt_tokens, requested, shape.default_max, max_len, chat=chat)
            total_prompt_tokens += prompt_tokens
            gen_requests.append(dataclasses.replace(probe, sampling=_sampling(req, shape, max_tokens)))
        return Prepared(
            id=rid,
            endpoint="chat.completions" if chat else "completions",
            model=req.model,
            target=target,
            shadow=shadow,
            requests=gen_requests,
            n=req.n,
            user=user,
            prompt_log=shape.prompt_log,
            tags=dict(req.metadata) if req.metadata else None,
            stream=req.stream,
            include_usage=req.include_usage(),
            prompt_tokens=total_prompt_tokens,
            tool_mode=shape.tool_mode,
            tool_name=shape.tool_name,
            tools=shape.tools,
            top_logprobs=shape.top_logprobs,
            echo=shape.echo,
            echo_only=shape.echo_only,
            response_format_log=req.format_log(),
            tools_log=req.tools_log() if isinstance(req, ChatCompletionRequest) else None,
        )

    def _chat_shape(self, req: ChatCompletionRequest) -> _Shape:
        """A chat request's prompt, defaults, log-probabilities and tools (how tool calls are produced)."""
        messages = req.engine_messages()
        shape = _Shape(
            prompts=[(None, messages)],
            prompt_log=json.dumps(list(messages), ensure_ascii=False),
            default_max=self.core.config.default_max_tokens,
            top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            structured=_structured(req),
            template={
                "add_generation_prompt": req.add_generation_prompt,
                "continue_final_message": req.continue_final_message,
                "chat_template_kwargs": req.chat_template_kwargs,
            },
        )
        choice = req.effective_tool_choice()
        if not req.tools or choice == "none":
            return shape
        shape.tools = tuple(t.model_dump(exclude_none=True) for t in req.tools)
        if isinstance(choice, NamedToolChoice):
            shape.tool_mode, shape.tool_name = "named", choice.function.name
        else:
            shape.tool_mode = choice
        tool_schema = req.tool_schema()
        if tool_schema is not None:  # required / named: the arguments are constrained by the schema
            shape.structured = StructuredOutput(json_schema=tool_schema, param="tools")
        elif not self.core.engine.supports_tools():
            raise BadRequestError(
                f"tool_choice 'auto' needs a model whose chat template supports tools and a tool "
                f"parser; {self.core.engine.model_id} has neither. Use tool_choice 'required' or a "
                f"named function (the arguments are then constrained by the function's JSON schema).",
                param="tool_choice",
                code="invalid_value",
            )
        return shape

    def _completion_shape(self, req: CompletionRequest) -> _Shape:
        """A completions request's prompts (text or token ids), defaults, log-probabilities and echo."""
        texts = req.prompts()
        return _Shape(
            prompts=[(p, None) for p in texts],
            prompt_log=(
                texts[0]
                if len(texts) == 1 and isinstance(texts[0], str)
                else json.dumps(texts, ensure_ascii=False)
            ),
            default_max=self.core.config.default_completion_max_tokens,
            top_logprobs=req.logprobs,
            structured=_structured(req),
            echo=req.echo,
            echo_only=req.echo and req.max_tokens == 0,
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
                dataclasses.replace(r, request_id=f"shadow-{r.request_id}", lora=lora) for r in prep.requests
            ],
            n=prep.n,
            user=prep.user,
            prompt_log=prep.prompt_log,
            tags=prep.tags,
            stream=False,
            include_usage=False,
            prompt_tokens=prep.prompt_tokens,
            tool_mode=prep.tool_mode,
            tool_name=prep.tool_name,
            tools=prep.tools,
            top_logprobs=prep.top_logprobs,
            echo=prep.echo,
            echo_only=prep.echo_only,
            response_format_log=prep.response_format_log,
            tools_log=prep.tools_log,
        )

        async def run_shadow() -> None:
            with contextlib.suppress(Exception):
                await self.run_to_completion(shadow_prep, shadow_of=prep.id)

        asyncio.get_running_loop().create_task(run_shadow())

    async def run_to_completion(
        self, prep: Prepared, shadow_of: str | None = None
    ) -> ChatCompletionResponse | CompletionResponse:
        """Run a non-streaming request; returns the OpenAI response."""
        if shadow_of is None:
            self._start_shadow(prep)
        run = _Run(prep.id, prep.endpoint, prep.target, echo_only=prep.echo_only)
        run.prompt_tokens = prep.prompt_tokens
        status, error = 200, None
        try:
            with self.core.lease(prep.target):
                async for index, chunk in self._chunks(prep, run):
                    run.add(chunk, index)
            if prep.tool_mode != "none":
                for index in range(prep.n * len(prep.requests)):
                    self._read_tool_calls(prep, run, index)
        except asyncio.CancelledError:
            status, error = 499, "client disconnected"
            raise
        except Exception as exc:
            err = api_error(exc, prompt_param=prep.prompt_param)
            status, error = err.status_code, _log_text(exc, err)
            if err is exc:
                raise
            raise err from exc
        finally:
            self._finish(prep, run, status, error, shadow_of)
        return self._body(prep, run)

    async def stream(self, prep: Prepared) -> AsyncIterator[bytes]:
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
        self._start_shadow(prep)
        run = _Run(prep.id, prep.endpoint, prep.target, echo_only=prep.echo_only)
        run.prompt_tokens = prep.prompt_tokens
        created = now_s()
        model = prep.target.served_by
        status, error = 200, None
        chat = prep.endpoint == "chat.completions"
        offsets: dict[int, int] = {}  # completions: text_offset of the next token, per choice
        named_started: set[int] = set()

        def event(choice: ChatChunkChoice | CompletionChoice) -> bytes:
            if isinstance(choice, ChatChunkChoice):
                return _sse(ChatCompletionChunk(id=prep.id, created=created, model=model, choices=[choice]))
            return _sse(CompletionChunk(id=prep.id, created=created, model=model, choices=[choice]))

        try:
            with self.core.lease(prep.target):
                if chat:
                    for i in range(prep.n * len(prep.requests)):
                        content = None if prep.tool_mode != "none" else ""
                        yield event(_delta(i, {"role": "assistant", "content": content}, None, None))
                async for index, chunk in self._chunks(prep, run):
                    first = index not in run.prompts and chunk.prompt_text is not None
                    run.add(chunk, index)
                    if chat:
                        for choice in self._chat_deltas(prep, run, index, chunk, named_started):
                            yield event(choice)
                        continue
                    text = "" if prep.echo_only else chunk.text
                    tokens = [] if prep.echo_only else (chunk.logprobs or [])
                    if first and prep.echo:
                        prompt_text, prompt_lps = run.prompts[index]
                        text = prompt_text + text
                        tokens = list(prompt_lps or []) + tokens
                    if not text and not chunk.finish_reason:
                        continue
                    yield event(
                        CompletionChoice(
                            index=index,
                            text=text,
                            logprobs=_completion_logprobs(tokens, offsets, index)
                            if prep.top_logprobs is not None
                            else None,
                            finish_reason=run.finish.get(index) if chunk.finish_reason else None,
                        )
                    )
            if prep.include_usage:
                last = ChatCompletionChunk if chat else CompletionChunk
                yield _sse(last(id=prep.id, created=created, model=model, choices=[], usage=_usage(run)))
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client disconnected"
            raise
        except Exception as exc:  # the headers are sent: the error is the stream's last event
            err = api_error(exc, prompt_param=prep.prompt_param)
            status, error = err.status_code, _log_text(exc, err)
            yield _sse(err.to_body())
        finally:
            self._finish(prep, run, status, error, None)

    def _chat_deltas(
        self, prep: Prepared, run: _Run, index: int, chunk: GenerationChunk, named_started: set[int]
    ) -> list[ChatChunkChoice]:
        """The chat stream choices (`delta`s) one engine chunk makes."""
        done = chunk.finish_reason is not None
        if prep.tool_mode == "named":
            deltas: list[ChatChunkChoice] = []
            if index not in named_started:
                named_started.add(index)
                call = {"name": prep.tool_name, "arguments": ""}
                run.tool_calls[index] = [call]  # type: ignore[list-item]
                head = {"index": 0, "id": _call_id(), "type": "function", "function": dict(call)}
                deltas.append(_delta(index, {"tool_calls": [head]}, None, None))
            if chunk.text:
                run.tool_calls[index][0]["arguments"] = run.texts.get(index, "")
                args = {"index": 0, "function": {"arguments": chunk.text}}
                deltas.append(_delta(index, {"tool_calls": [args]}, None, None))
            if done:
                deltas.append(_delta(index, {}, None, run.finish.get(index)))
            return deltas
        if prep.tool_mode == "required":  # vLLM's streaming of the calls array, as they are generated
            from serving.engine.vllm_engine import required_tool_call_deltas

            current = run.texts.get(index, "")
            previous = current[: len(current) - len(chunk.text)]
            out = []
            if chunk.text:
                calls = required_tool_call_deltas(previous, current)
                if calls:
                    out.append(_delta(index, {"tool_calls": calls}, None, None))
            if done:
                self._read_tool_calls(prep, run, index)
                out.append(_delta(index, {}, None, run.finish.get(index)))
            return out
        if prep.tool_mode == "auto":  # the model's tool parser reads the calls from the whole answer
            if not done:
                return []
            self._read_tool_calls(prep, run, index)
            calls = run.tool_calls.get(index, [])
            out = [
                _delta(
                    index,
                    {"tool_calls": [{"index": k, "id": _call_id(), "type": "function", "function": call}]},
                    None,
                    None,
                )
                for k, call in enumerate(calls)
            ]
            if not calls and run.texts.get(index):
                out.append(_delta(index, {"content": run.texts[index]}, None, None))
            out.append(_delta(index, {}, None, run.finish.get(index)))
            return out
        if not chunk.text and not done:
            return []
        logprobs = None
        if prep.top_logprobs is not None:
            logprobs = ChatLogprobs(
                content=[_chat_logprob(t, prep.top_logprobs) for t in chunk.logprobs or []]
            )
        return [_delta(index, {"content": chunk.text} if chunk.text else {}, logprobs, chunk.finish_reason)]

    def _read_tool_calls(self, prep: Prepared, run: _Run, index: int) -> None:
        """Read a finished choice's tool calls into `run.tool_calls` (and set finish_reason as vLLM does)."""
        text = run.texts.get(index, "")
        finished_normally = run.finish.get(index, "stop") == "stop"
        calls: list[dict[str, str]] = []
        if prep.tool_mode == "named":
            calls = [{"name": str(prep.tool_name), "arguments": text}]
        elif prep.tool_mode == "required":
            try:
                items = json.loads(text)
                calls = [
                    {
                        "name": str(item["name"]),
                        "arguments": json.dumps(item["parameters"], ensure_ascii=False),
                    }
                    for item in items
                ]
            except (ValueError, TypeError, KeyError):
                calls = []  # cut short (max_tokens): the text is returned as content
        elif prep.tool_mode == "auto":
            content, calls = self.core.engine.parse_tool_calls(text, prep.tools or ())
            run.texts[index] = content or ""
        run.tool_calls[index] = calls
        if calls and finished_normally and prep.tool_mode != "named":
            run.finish[index] = "tool_calls"

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
        calls = [run.tool_calls.get(i, []) for i in range(n_choices)]
        tool_calls_log = None
        if any(calls):
            tool_calls_log = json.dumps(calls[0] if n_choices == 1 else calls, ensure_ascii=False)
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
                response_format=prep.response_format_log,
                tools=prep.tools_log,
                tool_calls=tool_calls_log,
            )
        )

    def _body(self, prep: Prepared, run: _Run) -> ChatCompletionResponse | CompletionResponse:
        n_choices = prep.n * len(prep.requests)
        model = prep.target.served_by
        if prep.endpoint == "chat.completions":
            chat_choices = []
            for i in range(n_choices):
                calls = run.tool_calls.get(i, [])
                message = ChatChoiceMessage(content=run.texts.get(i, ""))
                if calls:
                    message = ChatChoiceMessage(
                        content=run.texts.get(i) or None if prep.tool_mode == "auto" else None,
                        tool_calls=[ChatToolCall(id=_call_id(), function=CalledFunction(**c)) for c in calls],
                    )
                logprobs = None
                if prep.top_logprobs is not None:
                    content = [_chat_logprob(t, prep.top_logprobs) for t in run.logprobs.get(i, [])]
                    logprobs = ChatLogprobs(content=content)
                chat_choices.append(
                    ChatChoice(
                        index=i, message=message, logprobs=logprobs, finish_reason=run.finish.get(i, "stop")
                    )
                )
            return ChatCompletionResponse(
                id=prep.id, created=now_s(), model=model, choices=chat_choices, usage=_usage(run)
            )
        text_choices = []
        for i in range(n_choices):
            text = run.texts.get(i, "")
            tokens = run.logprobs.get(i, [])
            if prep.echo:
                prompt_text, prompt_lps = run.prompts.get(i, ("", None))
                text = prompt_text + text
                tokens = list(prompt_lps or []) + tokens
            text_choices.append(
                CompletionChoice(
                    index=i,
                    text=text,
                    logprobs=_completion_logprobs(tokens, {}, i) if prep.top_logprobs is not None else None,
                    finish_reason=run.finish.get(i, "stop"),
                )
            )
        return CompletionResponse(
            id=prep.id, created=now_s(), model=model, choices=text_choices, usage=_usage(run)
        )


@dataclass
class _Shape:
    """What `prepare` reads off a request before counting tokens: its prompts and how to sample them."""

    prompts: list[tuple[str | list[int] | None, tuple[dict[str, Any], ...] | None]]
    """(text or token ids, chat messages) per prompt."""
    prompt_log: str
    default_max: int
    top_logprobs: int | None
    structured: StructuredOutput | None
    echo: bool = False
    echo_only: bool = False
    tool_mode: ToolMode = "none"
    tool_name: str | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    template: dict[str, Any] = field(default_factory=dict)
    """Chat: the chat-template options (`GenerationRequest` fields) the request sets."""


def _structured(req: ChatCompletionRequest | CompletionRequest) -> StructuredOutput | None:
    """`response_format` or vLLM's `structured_outputs` as the engine's constraint (None: free text)."""
    so = req.structured_outputs
    if so is not None:
        return StructuredOutput(
            json_schema=so.json_schema(),
            json_object=bool(so.json_object),
            regex=so.regex,
            choice=tuple(so.choice) if so.choice is not None else None,
            grammar=so.grammar,
            disable_any_whitespace=so.disable_any_whitespace,
            disable_additional_properties=so.disable_additional_properties,
            whitespace_pattern=so.whitespace_pattern,
            param="structured_outputs",
        )
    schema, json_object = req.json_format()
    if schema is None and not json_object:
        return None
    return StructuredOutput(json_schema=schema, json_object=json_object)


def _check_constrainable(
    req: ChatCompletionRequest | CompletionRequest, structured: StructuredOutput
) -> None:
    """400 for the sampling fields that contradict an output constraint: vLLM accepts them, then
    `allowed_token_ids` without a token the grammar allows ends the request inside the engine, and
    `ignore_eos` goes on generating past the constrained output's end."""
    for param, given in (("allowed_token_ids", req.allowed_token_ids), ("ignore_eos", req.ignore_eos)):
        if given:
            raise BadRequestError(
                f"'{param}' cannot be combined with '{structured.param}': the output must follow the "
                f"constraint, which {param} can contradict.",
                param=param,
            )


def _max_tokens(
    prompt_tokens: int, requested: int | None, default_max: int, max_len: int, *, chat: bool
) -> int:
    """The request's max_tokens (default: what fits, up to `default_max`); 400 when the prompt leaves no
    room or prompt + max_tokens exceeds the context length."""
    room = max_len - prompt_tokens
    if room <= 0:
        raise BadRequestError(
            f"This model's maximum context length is {max_len} tokens; the prompt has {prompt_tokens}.",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    max_tokens = requested if requested is not None else min(default_max, room)
    if prompt_tokens + max_tokens > max_len:
        raise BadRequestError(
            f"This model's maximum context length is {max_len} tokens; the prompt has {prompt_tokens} "
            f"tokens and max_tokens is {max_tokens}. Reduce the prompt or max_tokens.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return max_tokens


def _sampling(
    req: ChatCompletionRequest | CompletionRequest, shape: _Shape, max_tokens: int
) -> SamplingSettings:
    """Every sampling field of the request, as the engine takes them."""
    return SamplingSettings(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        stop=req.stop_tuple(),
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        top_k=req.top_k,
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        logit_bias=req.logit_bias_ids(),
        ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens,
        logprobs=shape.top_logprobs,
        prompt_logprobs=shape.top_logprobs if shape.echo else None,
        structured=shape.structured,
        # tool-call markers may be special tokens: a tool parser needs them (as vLLM's parsers ask)
        skip_special_tokens=req.skip_special_tokens and shape.tool_mode != "auto",
        spaces_between_special_tokens=req.spaces_between_special_tokens,
        stop_token_ids=tuple(req.stop_token_ids or ()),
        include_stop_str_in_output=req.include_stop_str_in_output,
        allowed_token_ids=tuple(req.allowed_token_ids) if req.allowed_token_ids else None,
        bad_words=tuple(req.bad_words or ()),
        stream_interval=req.stream_interval,
    )


def _usage(run: _Run) -> Usage:
    c = run.total_completion_tokens
    return Usage(prompt_tokens=run.prompt_tokens, completion_tokens=c, total_tokens=run.prompt_tokens + c)


def _sse(obj: ChatCompletionChunk | CompletionChunk | dict[str, Any]) -> bytes:
    data = obj if isinstance(obj, dict) else obj.model_dump(mode="json")
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _log_text(exc: Exception, err: APIError) -> str:
    """The request log's `error` for a failed request (the exception's repr for an unexpected one)."""
    return repr(exc) if err.unexpected else str(exc)


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _delta(
    index: int, delta: dict[str, Any], logprobs: ChatLogprobs | None, finish: str | None
) -> ChatChunkChoice:
    """A chat stream choice; `delta` holds only what this event adds (the keys it names are sent)."""
    return ChatChunkChoice(
        index=index, delta=ChatDelta.model_validate(delta), logprobs=logprobs, finish_reason=finish
    )


def _chat_logprob(t: TokenLogprob, top: int) -> ChatTokenLogprob:
    """One token in OpenAI's chat `logprobs.content` shape, with `top` alternatives."""
    return ChatTokenLogprob(
        token=t.token,
        logprob=t.logprob if t.logprob is not None else 0.0,
        bytes=list(t.token.encode()),
        top_logprobs=[TopLogprob(token=tok, logprob=lp, bytes=list(tok.encode())) for tok, lp in t.top[:top]],
    )


def _completion_logprobs(
    tokens: list[TokenLogprob], offsets: dict[int, int], index: int
) -> CompletionLogprobs:
    """OpenAI's completions `logprobs` (tokens, token_logprobs, top_logprobs, text_offset); `offsets` carries
    each choice's running text offset across stream chunks."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    offset = offsets.get(index, 0)
    for t in tokens:
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append(dict(t.top) if t.logprob is not None else None)
        out.text_offset.append(offset)
        offset += len(t.token)
    offsets[index] = offset
    return out
