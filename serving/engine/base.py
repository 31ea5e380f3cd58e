"""The engine protocol: what the serving layer needs from an inference engine.

An engine turns a prompt (text or chat messages) into a stream of `GenerationChunk`s,
optionally through a LoRA adapter, and loads/unloads adapters at run time. The vLLM engine
(`serving.engine.vllm_engine.VLLMEngine`) is the real one; `serving.engine.fake.FakeEngine`
is a deterministic stand-in for unit tests only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


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


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: exactly one of `prompt` (text) or `messages` (chat) is set."""

    request_id: str
    sampling: SamplingSettings
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    lora: LoRASpec | None = None


@dataclass(slots=True)
class GenerationChunk:
    """Incremental output for one choice: `text` is the delta since the previous chunk."""

    index: int
    text: str
    prompt_tokens: int
    completion_tokens: int  # cumulative for this choice
    finish_reason: Literal["stop", "length"] | None = None
    extra: dict[str, object] = field(default_factory=dict)


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

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...
