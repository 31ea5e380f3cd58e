"""The real inference engine: vLLM's in-process async engine (v1 `AsyncLLM`) behind the `Engine` protocol.

Owns: building vLLM engine arguments from a small typed config (device-aware defaults: fp32 + eager mode
on CPU, bf16 on CUDA), rendering chat messages (and tools, and the chat-template options) with the model's
chat template, the context-length check, mapping `SamplingSettings` to vLLM `SamplingParams` (delta
streaming; vLLM's sampling and detokenization extensions; structured outputs through vLLM's
`StructuredOutputsParams` on one backend, xgrammar unless configured; generated and prompt
log-probabilities), streaming `GenerationChunk`s, aborting a request whose consumer stops reading, run-time
LoRA adapter load/unload, and reading tool calls out of an answer with vLLM's own tool parsers
(`tool_call_parser`; picked from the chat template when not set).

vLLM is imported lazily (in `start()`), so importing this module is cheap and works without vLLM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from common.settings import did_you_mean
from serving.engine.base import (
    CONTROL_PRIORITY,
    EngineError,
    GenerationChunk,
    GenerationRequest,
    InvalidParameterError,
    LoRASpec,
    PromptTooLongError,
    SamplingSettings,
    TokenLogprob,
)
from serving.engine.cpu_slots import CpuSlot, claim_cpu_slot, slot_folder
from serving.engine.devices import (
    DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS,
    DeviceKind,
    apply_cpu_env_defaults,
    detect_device,
)

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

SupportedLoRARank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]
SUPPORTED_LORA_RANKS: tuple[int, ...] = get_args(SupportedLoRARank)
"""The values vLLM accepts for `max_lora_rank`."""


@dataclass(frozen=True, slots=True)
class VLLMEngineConfig:
    """How to build the vLLM engine. Defaults suit the small default model on a CPU-only machine."""

    model: str
    """Local Hugging Face model folder (config.json, tokenizer, safetensors weights)."""
    served_model_id: str | None = None
    """The id clients use for the base model; default: the model folder's name."""
    max_model_len: int = 2048
    """Context window (prompt + output tokens) the engine accepts and reserves KV cache for."""
    enable_lora: bool = True
    max_loras: int = 4
    """Adapters that can run in one batch."""
    max_lora_rank: int = 16
    """Largest LoRA rank accepted; one of SUPPORTED_LORA_RANKS."""
    max_cpu_loras: int | None = None
    """Adapters kept loaded (LRU beyond this); default: vLLM's (= max_loras)."""
    dtype: str = "auto"
    """"auto": float32 on CPU (bf16 is ~5x slower there), bfloat16 on CUDA; or any vLLM dtype name."""
    enforce_eager: bool | None = None
    """None: True on CPU (start ~33 s instead of ~95 s), False on CUDA (CUDA graphs)."""
    cpu_kvcache_space_gib: int | None = None
    """CPU KV cache in GiB; None: $VLLM_CPU_KVCACHE_SPACE if set, else 2. (The env var wins if set.)"""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory vLLM may use (CUDA only)."""
    max_num_seqs: int | None = None
    """Concurrent sequences per step; None: vLLM's default."""
    max_num_batched_tokens: int | None = None
    """Tokens one step may process (chunked-prefill budget); None: `DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS` on
    CPU, vLLM's default on CUDA."""
    seed: int = 0
    log_stats: bool = False
    """vLLM's periodic throughput log lines."""
    cpu_slots: int | None = None
    """CPU only: split this machine's cores into this many slots, one per engine (replica) on it, and bind
    this engine to a free one (`serving.engine.cpu_slots`); None: vLLM's binding (all cores). Ignored when
    `VLLM_CPU_OMP_THREADS_BIND` is set."""
    cpu_slot_key: str = ""
    """Names the service whose replicas share the slots (engines of one service on one machine)."""
    scheduling_policy: Literal["priority", "fcfs"] = "priority"
    """vLLM's scheduler: "priority" lets control generations (`GenerationRequest.priority`, e.g. staging's
    smoke test) overtake waiting client requests, so a swap does not wait for the queue; client requests
    all have priority 0 and keep first-come-first-served order among themselves."""
    stream_interval: int = 1
    """Tokens per streamed chunk (vLLM's `stream_interval`; a request may raise it for itself)."""
    structured_outputs_backend: Literal["xgrammar", "guidance"] = "xgrammar"
    """vLLM's structured-output backend for every constrained request (`response_format`, forced tool
    calls, `structured_outputs`). Not vLLM's "auto": the engine compiles every request with the backend
    of the first constrained one, so a request that auto sent to the other backend would fail inside the
    engine instead of being refused up front."""
    tool_call_parser: str | None = None
    """vLLM tool parser for `tool_choice: auto` (as `vllm serve --tool-call-parser`, e.g. "hermes");
    None: "hermes" when the chat template renders tools and emits `<tool_call>`, else `auto` is refused."""
    engine_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra `AsyncEngineArgs` fields; they override everything above."""

    def __post_init__(self) -> None:
        if self.max_model_len < 16:
            raise ValueError(f"max_model_len must be at least 16, got {self.max_model_len}.")
        if self.max_lora_rank not in SUPPORTED_LORA_RANKS:
            raise ValueError(
                f"max_lora_rank must be one of {SUPPORTED_LORA_RANKS}, got {self.max_lora_rank}."
            )
        if self.max_loras < 1:
            raise ValueError(f"max_loras must be at least 1, got {self.max_loras}.")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras ({self.max_loras})."
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}.")


class VLLMEngine:
    """`Engine` backed by vLLM's `AsyncLLM`. Call `await start()` first, `await shutdown()` last."""

    def __init__(self, config: VLLMEngineConfig) -> None:
        self.config = config
        self.model_id: str = config.served_model_id or Path(config.model).name
        self.max_model_len: int = config.max_model_len
        self.max_lora_rank: int = config.max_lora_rank
        self.device: DeviceKind = detect_device()
        self.start_seconds: float | None = None
        """Wall time `start()` took to build the engine (model load + KV cache + warm-up)."""
        self._engine: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._loras: dict[int, LoRASpec] = {}
        self._processes: set[int] = set()
        self.cpu_slot: CpuSlot | None = None
        self._tool_parser: str | None = None

    # ---------------------------------------------------------------- lifecycle
    def engine_args(self) -> AsyncEngineArgs:
        """The vLLM engine arguments this config means on this device (also sets CPU env defaults)."""
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs

        cfg = self.config
        on_cpu = self.device == "cpu"
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "served_model_name": self.model_id,
            "max_model_len": cfg.max_model_len,
            "dtype": ("float32" if on_cpu else "bfloat16") if cfg.dtype == "auto" else cfg.dtype,
            "enforce_eager": on_cpu if cfg.enforce_eager is None else cfg.enforce_eager,
            "seed": cfg.seed,
            "disable_log_stats": not cfg.log_stats,
            "enable_lora": cfg.enable_lora,
            "scheduling_policy": cfg.scheduling_policy,
            "structured_outputs_config": StructuredOutputsConfig(backend=cfg.structured_outputs_backend),
            "stream_interval": cfg.stream_interval,
        }
        if cfg.enable_lora:
            kwargs.update(max_loras=cfg.max_loras, max_lora_rank=cfg.max_lora_rank)
            if cfg.max_cpu_loras is not None:
                kwargs["max_cpu_loras"] = cfg.max_cpu_loras
        if cfg.max_num_seqs is not None:
            kwargs["max_num_seqs"] = cfg.max_num_seqs
        if cfg.max_num_batched_tokens is not None or on_cpu:
            kwargs["max_num_batched_tokens"] = (
                cfg.max_num_batched_tokens or DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS
            )
        if on_cpu:
            applied = apply_cpu_env_defaults(cfg.cpu_kvcache_space_gib)
            if applied:
                logger.info("vLLM CPU environment defaults set: %s", applied)
        else:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        kwargs.update(cfg.engine_kwargs)
        return AsyncEngineArgs(**kwargs)

    def _bind_cpu_slot(self) -> None:
        """CPU with `cpu_slots`: claim a slot and bind the engine (started next, in a child process that
        inherits this environment) to its cores."""
        cfg = self.config
        if self.device != "cpu" or not cfg.cpu_slots or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
            return
        self.cpu_slot = claim_cpu_slot(cfg.cpu_slots, slot_folder(cfg.cpu_slot_key or cfg.model))
        if self.cpu_slot is None:
            logger.info("no free CPU slot of %d: vLLM binds to all cores", cfg.cpu_slots)
            return
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_slot.bind
        logger.info("engine bound to CPU slot %d (cores %s)", self.cpu_slot.index, self.cpu_slot.bind)

    async def start(self) -> None:
        """Build the engine (blocks the event loop while vLLM loads the model: tens of seconds on CPU)."""
        if self._engine is not None:
            return
        if not (Path(self.config.model) / "config.json").is_file():
            raise EngineError(f"Model folder {self.config.model!r} has no config.json.")
        self._check_tool_parser()
        from vllm.v1.engine.async_llm import AsyncLLM

        before = _child_pids()
        started = time.perf_counter()
        self._bind_cpu_slot()
        try:
            self._engine = AsyncLLM.from_engine_args(self.engine_args())
        except Exception as exc:
            _reap(_child_pids() - before)
            raise EngineError(f"vLLM failed to start for model {self.config.model!r}: {exc}") from exc
        self._processes = _child_pids() - before
        self._tokenizer = self._engine.get_tokenizer()
        self._tool_parser = self._pick_tool_parser()
        self.start_seconds = time.perf_counter() - started
        logger.info(
            "vLLM engine for %s started on %s in %.1f s", self.model_id, self.device, self.start_seconds
        )

    @property
    def process_ids(self) -> frozenset[int]:
        """Processes this engine started (vLLM's engine core and its workers)."""
        return frozenset(self._processes)

    async def shutdown(self) -> None:
        """Stop the engine and every process it started; safe to call twice.

        vLLM's own shutdown stops the engine core; a worker process still alive a few seconds later is
        killed, so a stopped engine never leaves a process spinning on the CPU.
        """
        engine, self._engine = self._engine, None
        processes, self._processes = self._processes, set()
        self._loras.clear()
        try:
            if engine is not None:
                engine.shutdown()
        finally:
            _reap(processes)
            if self.cpu_slot is not None:  # its engine processes are gone: the cores are free again
                if os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == self.cpu_slot.bind:
                    del os.environ["VLLM_CPU_OMP_THREADS_BIND"]  # a restarted engine claims a slot anew
                self.cpu_slot.release()
                self.cpu_slot = None

    async def check_health(self) -> None:
        """Raise EngineError when the engine is not started or its engine core has died."""
        engine = self._require_engine()
        try:
            await engine.check_health()
        except Exception as exc:
            raise EngineError(f"vLLM engine is unhealthy: {exc}") from exc

    # ---------------------------------------------------------------- prompts
    def _render(self, request: GenerationRequest) -> tuple[str, list[int]]:
        """Prompt text and its token ids (chat messages through the chat template, or the text as is),
        truncated as the request asks (`truncate_prompt_tokens`)."""
        text, ids = self._render_whole(request)
        keep = request.truncate_prompt_tokens
        if keep is None:
            return text, ids
        keep = self.max_model_len if keep == -1 else keep
        if len(ids) <= keep:
            return text, ids
        ids = ids[-keep:] if request.truncation_side == "left" else ids[:keep]
        return str(self._tokenizer.decode(ids)), ids

    def _render_whole(self, request: GenerationRequest) -> tuple[str, list[int]]:
        self._require_engine()
        tokenizer = self._tokenizer
        given = [
            request.prompt is not None,
            request.messages is not None,
            request.prompt_token_ids is not None,
        ]
        if sum(given) != 1:
            raise ValueError(
                "A generation request needs exactly one of `prompt`, `prompt_token_ids` or `messages`."
            )
        if request.messages is not None:
            if not request.messages:
                raise ValueError("`messages` must not be empty.")
            extra: dict[str, Any] = {}
            if request.tools and self.template_renders_tools():
                extra["tools"] = [dict(tool) for tool in request.tools]
            messages = [dict(message) for message in request.messages]
            if "tool_calls" not in self._chat_template():  # the template would drop them: keep them as text
                for message in messages:
                    if message.get("tool_calls"):
                        calls = [c.get("function", c) for c in message.pop("tool_calls")]
                        text_calls = json.dumps(calls, ensure_ascii=False)
                        message["content"] = f"{message.get('content') or ''}{text_calls}"
            try:
                text = tokenizer.apply_chat_template(
                    messages,
                    add_generation_prompt=request.add_generation_prompt,
                    continue_final_message=request.continue_final_message,
                    tokenize=False,
                    **extra,
                    **dict(request.chat_template_kwargs or {}),
                )
            except Exception as exc:  # jinja errors from the template (bad roles, missing keys)
                raise ValueError(f"The chat template could not render these messages: {exc}") from exc
            return str(text), list(tokenizer.encode(text, add_special_tokens=False))
        if request.prompt_token_ids is not None:
            ids = list(request.prompt_token_ids)
            self._check_token_ids(ids, "prompt")
            return str(tokenizer.decode(ids)), ids
        assert request.prompt is not None
        return request.prompt, list(tokenizer.encode(request.prompt, add_special_tokens=True))

    # ---------------------------------------------------------------- tools
    def _chat_template(self) -> str:
        template = getattr(self._tokenizer, "chat_template", None)
        return template if isinstance(template, str) else ""

    def template_renders_tools(self) -> bool:
        """Whether the model's chat template has a place for tool definitions."""
        return "tools" in self._chat_template()

    def _check_tool_parser(self) -> None:
        """A configured `tool_call_parser` must be one vLLM has (checked before the model loads)."""
        name = self.config.tool_call_parser
        if not name:
            return
        from vllm.tool_parsers import ToolParserManager

        known = ToolParserManager.list_registered()
        if name not in known:
            raise EngineError(
                f"engine.tool_call_parser {name!r} is not a vLLM tool parser{did_you_mean(name, known)}; "
                f"one of: {', '.join(known)}"
            )

    def _pick_tool_parser(self) -> str | None:
        if self.config.tool_call_parser:
            return self.config.tool_call_parser
        template = self._chat_template()
        if "tools" in template and "<tool_call>" in template:
            return "hermes"
        return None

    def supports_tools(self) -> bool:
        """`tool_choice: auto` works: the template renders tools and a vLLM tool parser reads the calls."""
        return self._tool_parser is not None and self.template_renders_tools()

    def parse_tool_calls(
        self, text: str, tools: tuple[dict[str, Any], ...]
    ) -> tuple[str | None, list[dict[str, str]]]:
        """(content, [{"name", "arguments"}]) of a finished answer, read by the model's vLLM tool parser."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers import ToolParserManager

        if self._tool_parser is None:
            return text, []
        parser_cls = ToolParserManager.get_tool_parser(self._tool_parser)
        request = ChatCompletionRequest.model_validate(
            {"model": self.model_id, "messages": [{"role": "user", "content": ""}], "tools": list(tools)}
        )
        parser = parser_cls(self._tokenizer, list(request.tools or []))
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return text, []
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in info.tool_calls]
        return info.content, calls

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Prompt length in tokens, exactly as `generate` would submit it."""
        return len(self._render(request)[1])

    def _check_token_ids(self, ids: Iterable[int], param: str) -> None:
        """A 400 naming `param` when a token id is outside this model's vocabulary."""
        vocab = len(self._tokenizer)
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise InvalidParameterError(
                f"{param} has token id {bad[0]}, outside this model's vocabulary (0..{vocab - 1}).", param
            )

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.max_model_len:
            raise PromptTooLongError(prompt_tokens, max_tokens, self.max_model_len)

    @staticmethod
    def _sampling_params(settings: SamplingSettings) -> SamplingParams:
        from vllm.exceptions import VLLMClientError, VLLMValidationError
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        if settings.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {settings.max_tokens}.")
        structured = None
        try:
            if settings.structured is not None:
                so = settings.structured
                structured = StructuredOutputsParams(
                    json=so.json_schema,
                    json_object=True if so.json_object else None,
                    regex=so.regex,
                    choice=list(so.choice) if so.choice is not None else None,
                    grammar=so.grammar,
                    disable_any_whitespace=so.disable_any_whitespace,
                    disable_additional_properties=so.disable_additional_properties,
                    whitespace_pattern=so.whitespace_pattern,
                )
            return SamplingParams(
                n=settings.n,
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                min_p=settings.min_p,
                repetition_penalty=settings.repetition_penalty,
                stop=list(settings.stop) or None,
                seed=settings.seed,
                presence_penalty=settings.presence_penalty,
                frequency_penalty=settings.frequency_penalty,
                logit_bias=dict(settings.logit_bias) if settings.logit_bias else None,
                ignore_eos=settings.ignore_eos,
                min_tokens=settings.min_tokens,
                logprobs=settings.logprobs,
                prompt_logprobs=settings.prompt_logprobs,
                structured_outputs=structured,
                skip_special_tokens=settings.skip_special_tokens,
                spaces_between_special_tokens=settings.spaces_between_special_tokens,
                stop_token_ids=list(settings.stop_token_ids) or None,
                include_stop_str_in_output=settings.include_stop_str_in_output,
                allowed_token_ids=list(settings.allowed_token_ids) if settings.allowed_token_ids else None,
                bad_words=list(settings.bad_words) or None,
                stream_interval=settings.stream_interval,
                output_kind=RequestOutputKind.DELTA,
            )
        except VLLMValidationError as exc:
            raise InvalidParameterError(f"Invalid sampling settings: {exc}", exc.parameter) from exc
        except (VLLMClientError, ValueError) as exc:
            raise ValueError(f"Invalid sampling settings: {exc}") from exc

    def _token_text(self, token_id: int, decoded: str | None) -> str:
        return decoded if decoded is not None else str(self._tokenizer.decode([token_id]))

    def _logprobs(self, token_ids: Sequence[int], positions: Sequence[Any] | None) -> list[TokenLogprob]:
        """vLLM's per-position {token_id: Logprob} (None for a prompt's first token) as TokenLogprobs."""
        out: list[TokenLogprob] = []
        if positions is None:
            return out
        for token_id, position in zip(token_ids, positions, strict=False):
            if position is None:
                out.append(TokenLogprob(self._token_text(token_id, None), token_id, None))
                continue
            chosen = position.get(token_id)
            ranked = sorted(position.items(), key=lambda item: (item[1].rank or 0, -item[1].logprob))
            top = tuple(
                (self._token_text(tid, lp.decoded_token), max(lp.logprob, -9999.0)) for tid, lp in ranked
            )
            logprob = max(chosen.logprob, -9999.0) if chosen is not None else None
            token = self._token_text(token_id, chosen.decoded_token if chosen is not None else None)
            out.append(TokenLogprob(token, token_id, logprob, top))
        return out

    # ---------------------------------------------------------------- generation
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream deltas for each choice; the last chunk of a choice carries its finish_reason.

        Raises (before anything is submitted) PromptTooLongError, ValueError for a bad request, and
        EngineError when the engine fails. Closing the iterator early aborts the vLLM request.
        """
        from vllm.exceptions import VLLMClientError, VLLMValidationError
        from vllm.inputs.engine import tokens_input

        if request.priority not in (0, CONTROL_PRIORITY) and self.config.scheduling_policy != "priority":
            raise InvalidParameterError(
                "'priority' needs vLLM's priority scheduler (engine.scheduling_policy: priority); this "
                f"engine schedules {self.config.scheduling_policy}.",
                "priority",
            )
        engine = self._require_engine()
        prompt_text, token_ids = self._render(request)
        prompt_tokens = len(token_ids)
        self._check_fits(prompt_tokens, request.sampling.max_tokens)
        settings = request.sampling
        # vLLM refuses n > 1 with greedy decoding; OpenAI answers n identical choices: decode once, copy.
        copies = settings.n if settings.n > 1 and settings.temperature == 0 else 1
        params = self._sampling_params(dataclasses.replace(settings, n=1) if copies > 1 else settings)
        self._check_token_ids(settings.logit_bias or (), "logit_bias")
        self._check_token_ids(settings.stop_token_ids, "stop_token_ids")
        self._check_token_ids(settings.allowed_token_ids or (), "allowed_token_ids")
        lora_request = None
        if request.lora is not None:
            lora_request = self._lora_request(request.lora)
            self._loras.setdefault(request.lora.lora_int_id, request.lora)

        vllm_n = settings.n // copies
        completion_tokens = [0] * vllm_n
        first = [True] * vllm_n
        prompt_logprobs: list[TokenLogprob] | None = None
        done = 0
        stream = engine.generate(
            tokens_input(token_ids, prompt=prompt_text),
            params,
            request.request_id,
            lora_request=lora_request,
            priority=request.priority if self.config.scheduling_policy == "priority" else 0,
        )
        try:
            async for output in stream:
                if (
                    prompt_logprobs is None
                    and settings.prompt_logprobs is not None
                    and output.prompt_logprobs
                ):
                    prompt_logprobs = self._logprobs(token_ids, output.prompt_logprobs)
                for completion in output.outputs:
                    reason = completion.finish_reason
                    if reason == "abort":  # aborted through abort(): end quietly
                        return
                    if reason not in (None, "stop", "length"):
                        raise EngineError(f"Generation {request.request_id} ended with {reason!r}.")
                    completion_tokens[completion.index] += len(completion.token_ids)
                    chunk = GenerationChunk(
                        index=completion.index,
                        text=completion.text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens[completion.index],
                        finish_reason=reason,  # type: ignore[arg-type]
                    )
                    if settings.logprobs is not None:
                        chunk.logprobs = self._logprobs(completion.token_ids, completion.logprobs)
                    if first[completion.index]:
                        first[completion.index] = False
                        chunk.prompt_text = prompt_text
                        chunk.prompt_logprobs = prompt_logprobs
                    if completion.stop_reason is not None:
                        chunk.extra["stop_reason"] = completion.stop_reason
                    if reason is not None:
                        done += 1
                    yield chunk
                    for index in range(1, copies):
                        yield dataclasses.replace(chunk, index=index)
        except (EngineError, ValueError):
            raise
        except VLLMValidationError as exc:
            param = exc.parameter
            if settings.structured is not None and (param is None or "structured" in param):
                param = settings.structured.param
            raise InvalidParameterError(str(exc), param) from exc
        except VLLMClientError as exc:
            if settings.structured is not None:
                raise InvalidParameterError(str(exc), settings.structured.param) from exc
            raise ValueError(str(exc)) from exc
        except Exception as exc:
            raise EngineError(f"Generation {request.request_id} failed: {exc!r}") from exc
        finally:
            if done < vllm_n:
                # The consumer stopped early (disconnect) or something failed: closing vLLM's generator
                # aborts the request inside the engine.
                await stream.aclose()

    async def abort(self, request_id: str) -> None:
        """Abort a request (all its choices) by the id it was submitted with."""
        await self._require_engine().abort(request_id)

    # ---------------------------------------------------------------- adapters
    def _lora_request(self, lora: LoRASpec) -> LoRARequest:
        from vllm.lora.request import LoRARequest

        if not self.config.enable_lora:
            raise EngineError(f"Adapter {lora.name!r} requested but this engine was started without LoRA.")
        if lora.lora_int_id < 1:
            raise EngineError(f"Adapter {lora.name!r}: lora_int_id must be positive, got {lora.lora_int_id}.")
        return LoRARequest(lora_name=lora.name, lora_int_id=lora.lora_int_id, lora_path=lora.path)

    async def load_lora(self, lora: LoRASpec) -> None:
        """Load an adapter so requests can use it; a bad adapter raises EngineError and changes nothing."""
        engine = self._require_engine()
        folder = Path(lora.path)
        if not (folder / "adapter_config.json").is_file():
            raise EngineError(f"Adapter {lora.name!r}: {folder} has no adapter_config.json.")
        request = self._lora_request(lora)
        try:
            loaded = await engine.add_lora(request)
        except Exception as exc:
            raise EngineError(f"vLLM could not load adapter {lora.name!r} from {folder}: {exc}") from exc
        if not loaded:
            raise EngineError(f"vLLM refused to load adapter {lora.name!r} from {folder}.")
        self._loras[lora.lora_int_id] = lora

    async def unload_lora(self, lora: LoRASpec) -> None:
        """Unload an adapter; unloading one that is not loaded is a no-op."""
        engine = self._require_engine()
        self._loras.pop(lora.lora_int_id, None)
        try:
            await engine.remove_lora(lora.lora_int_id)
        except Exception as exc:
            raise EngineError(f"vLLM could not unload adapter {lora.name!r}: {exc}") from exc

    async def list_loras(self) -> list[str]:
        """Names of the adapters loaded in the engine now (evicted ones drop out)."""
        engine = self._require_engine()
        loaded = await engine.list_loras()
        for stale in set(self._loras) - set(loaded):
            del self._loras[stale]
        return sorted(self._loras[lora_id].name for lora_id in loaded if lora_id in self._loras)

    def num_unfinished_requests(self) -> int:
        """Requests (choices) the engine is still working on; 0 when idle or not started."""
        return 0 if self._engine is None else self._engine.get_num_unfinished_requests()

    # ---------------------------------------------------------------- helpers
    def _require_engine(self) -> AsyncLLM:
        if self._engine is None:
            raise EngineError("The vLLM engine is not started (call `await engine.start()`).")
        return self._engine


def required_tool_call_deltas(previous: str, current: str) -> list[dict[str, Any]]:
    """OpenAI `delta.tool_calls` entries for the text a `tool_choice: "required"` answer grew by (from
    `previous` to `current`, the `[{"name", "parameters"}, ...]` array): vLLM's own streaming of it, so each
    call is announced (id, name) as soon as its name is complete and its arguments stream as generated."""
    from vllm.tool_parsers.streaming import extract_required_tool_call_streaming

    delta, _ = extract_required_tool_call_streaming(
        previous_text=previous, current_text=current, tool_call_idx=None, tool_call_id_type="random"
    )
    if delta is None:
        return []
    return [call.model_dump(exclude_none=True) for call in delta.tool_calls]


def _child_pids() -> set[int]:
    """Descendants of this process, except multiprocessing's shared resource tracker."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not any("resource_tracker" in part for part in child.cmdline()):
                pids.add(child.pid)
    return pids


def _reap(pids: set[int], grace_s: float = 5.0) -> None:
    """Terminate the given processes (if still alive), then kill those that outlive `grace_s`."""
    import psutil

    alive = []
    for pid in pids:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    if not alive:
        return
    _, alive = psutil.wait_procs(alive, timeout=grace_s)  # vLLM's own shutdown usually finishes here
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            logger.warning("vLLM process %s did not stop; killing it", proc.pid)
            proc.kill()
