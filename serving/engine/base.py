"""The engine protocol: what the serving layer needs from an inference engine.

An engine turns a prompt (text or chat messages) into a stream of `GenerationChunk`s,
optionally through a LoRA adapter, and loads/unloads adapters at run time. The vLLM engine
(`serving.engine.vllm_engine.VLLMEngine`) is the real one; `serving.engine.fake.FakeEngine`
is a deterministic stand-in for unit tests only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


class EngineError(Exception):
    """An engine failed for a reason that is not the client's fault."""


class PromptTooLongError(ValueError):
    """The prompt (plus requested output) does not fit the model's context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens; the prompt has "
            f"{prompt_tokens} tokens and {max_tokens} output tokens were requested."
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len


class InvalidParameterError(ValueError):
    """The engine refused one request parameter (e.g. a JSON schema its grammar backend cannot compile);
    `param` names it as the client sent it (`response_format`, `tools`, `logit_bias`, ...)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class LoRASpec:
    """An adapter version the engine can load: a stable integer id, a unique name, a local folder."""

    name: str  # unique per version, e.g. "support@3f2a9c1d0b4e"
    lora_int_id: int  # stable positive id derived from the version hash
    path: str  # local folder with adapter_config.json + adapter_model.safetensors


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int = 0
    """0 (or -1): off."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: Mapping[int, float] | None = None
    """token id -> bias added to its logit (-100..100)."""
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None
    """Per generated token: its log-probability and this many most likely alternatives (None: none)."""
    prompt_logprobs: int | None = None
    """Per prompt token: its log-probability and this many alternatives (None: none)."""
    structured: StructuredOutput | None = None
    """Constrain the output to JSON (any object, or one JSON schema)."""
    skip_special_tokens: bool = True
    """False keeps special tokens in the text (tool-call markers some tool parsers need, as vLLM does)."""
    spaces_between_special_tokens: bool = True
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end a choice (as `stop` strings do), besides the model's end-of-sequence tokens."""
    include_stop_str_in_output: bool = False
    allowed_token_ids: tuple[int, ...] | None = None
    """Only these token ids may be generated (None: any)."""
    bad_words: tuple[str, ...] = ()
    """Words (token sequences) that must not be generated."""
    stream_interval: int | None = None
    """Stream every this many tokens instead of every token (vLLM's per-request `stream_interval`)."""


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """An output constraint: exactly one of `json_schema` (a JSON schema), `json_object` (any object),
    `regex`, `choice` (one of these strings) or `grammar` (EBNF), with vLLM's options for it.

    `param` names the request field it came from (`response_format`, `tools`, `structured_outputs`), so an
    engine that cannot compile it can say which field to fix."""

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    param: str = "response_format"

    def __post_init__(self) -> None:
        given = [self.json_schema, self.json_object or None, self.regex, self.choice, self.grammar]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "StructuredOutput needs exactly one of json_schema, json_object=True, regex, choice, grammar"
            )


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's log-probability (None for a prompt's first token) and its most likely alternatives."""

    token: str
    token_id: int
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: exactly one of `prompt` (text), `prompt_token_ids` or `messages` (chat) is set.

    `tools` (OpenAI function tool definitions) are passed to the chat template when it renders them."""

    request_id: str
    sampling: SamplingSettings
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    lora: LoRASpec | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    add_generation_prompt: bool = True
    """Chat: end the rendered prompt with the template's assistant header."""
    continue_final_message: bool = False
    """Chat: leave the last message open, so the model continues it (needs add_generation_prompt False)."""
    chat_template_kwargs: Mapping[str, Any] | None = None
    """Chat: extra variables for the chat template (e.g. `enable_thinking`)."""
    truncate_prompt_tokens: int | None = None
    """Keep only this many prompt tokens (-1: the context length); None: the whole prompt."""
    truncation_side: Literal["left", "right"] = "left"
    """Which end `truncate_prompt_tokens` cuts: "left" keeps the last tokens, "right" the first."""
    priority: int = 0
    """Scheduling priority (vLLM's: lower runs first). Client requests use 0; the service's own control
    generations (adapter smoke tests) use `CONTROL_PRIORITY` so they do not queue behind user traffic."""


CONTROL_PRIORITY = -10
"""Priority of the service's control generations (staging smoke tests): ahead of every client request."""


@dataclass(slots=True)
class GenerationChunk:
    """Incremental output for one choice: `text` is the delta since the previous chunk."""

    index: int
    text: str
    prompt_tokens: int
    completion_tokens: int  # cumulative for this choice
    finish_reason: Literal["stop", "length"] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    logprobs: list[TokenLogprob] | None = None
    """Log-probabilities of this chunk's tokens (when `SamplingSettings.logprobs` is set)."""
    prompt_logprobs: list[TokenLogprob] | None = None
    """Every prompt token with its log-probability, on the first chunk of each choice (when requested)."""
    prompt_text: str | None = None
    """The prompt as text (decoded when it was given as token ids), on the first chunk of each choice."""


@runtime_checkable
class Engine(Protocol):
    """The small surface every engine implements (as Ray Serve LLM's engine protocol)."""

    model_id: str
    max_model_len: int
    max_lora_rank: int

    async def start(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def abort(self, request_id: str) -> None: ...

    async def load_lora(self, lora: LoRASpec) -> None: ...

    async def unload_lora(self, lora: LoRASpec) -> None: ...

    async def list_loras(self) -> list[str]: ...

    async def count_prompt_tokens(self, request: GenerationRequest) -> int: ...

    def supports_tools(self) -> bool:
        """Whether `tool_choice: auto` works: the chat template renders tools and a parser reads calls."""
        ...

    def parse_tool_calls(
        self, text: str, tools: tuple[dict[str, Any], ...]
    ) -> tuple[str | None, list[dict[str, str]]]:
        """Split a finished answer into (content, [{"name", "arguments"}]) with the model's tool parser."""
        ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...
