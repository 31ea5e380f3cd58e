"""A deterministic in-process engine for unit tests only (never used by the service itself).

It "tokenizes" on whitespace, answers with words derived from a hash of the prompt and the adapter
name (so different adapters give different, reproducible answers), streams one word per step, and
keeps a set of loaded adapters like a real engine. An adapter folder without `adapter_config.json`
fails to load with `EngineError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from serving.engine.base import (
    EngineError,
    GenerationChunk,
    GenerationRequest,
    LoRASpec,
    PromptTooLongError,
)

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


class FakeEngine:
    """Deterministic engine: same prompt + same adapter → same words."""

    def __init__(
        self,
        model_id: str = "fake-base",
        *,
        max_model_len: int = 512,
        max_lora_rank: int = 16,
        step_delay_s: float = 0.0,
        fail_generation_for: set[str] | None = None,
    ) -> None:
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.step_delay_s = step_delay_s
        self.loaded: dict[str, LoRASpec] = {}
        self.generated_with: list[str | None] = []  # adapter name per request, for assertions
        self.aborted: list[str] = []
        self.fail_generation_for = fail_generation_for or set()
        self.started = False

    async def start(self) -> None:
        self.started = True

    @staticmethod
    def _prompt_text(request: GenerationRequest) -> str:
        if request.messages is not None:
            return "\n".join(f"{m['role']}: {m['content']}" for m in request.messages) + "\nassistant:"
        return request.prompt or ""

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self._prompt_text(request).split())

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        prompt_tokens = await self.count_prompt_tokens(request)
        max_tokens = request.sampling.max_tokens
        if prompt_tokens + max_tokens > self.max_model_len:
            raise PromptTooLongError(prompt_tokens, max_tokens, self.max_model_len)
        lora_name = request.lora.name if request.lora else None
        if request.lora is not None and request.lora.name not in self.loaded:
            raise EngineError(f"adapter {request.lora.name} is not loaded")
        if lora_name in self.fail_generation_for:
            raise EngineError(f"adapter {lora_name} produced invalid output")
        self.generated_with.append(lora_name)
        text = self._prompt_text(request)
        try:
            for index in range(request.sampling.n):
                seed = hashlib.sha256(f"{lora_name}|{index}|{text}".encode()).digest()
                length = 3 + seed[0] % 10
                stop_at = min(length, max_tokens)
                for step in range(stop_at):
                    if self.step_delay_s:
                        await asyncio.sleep(self.step_delay_s)
                    word = _WORDS[seed[(step + 1) % len(seed)] % len(_WORDS)]
                    finished = step == stop_at - 1
                    reason = None
                    if finished:
                        reason = "length" if stop_at == max_tokens and length > max_tokens else "stop"
                    yield GenerationChunk(
                        index=index,
                        text=(word if step == 0 else " " + word),
                        prompt_tokens=prompt_tokens,
                        completion_tokens=step + 1,
                        finish_reason=reason,  # type: ignore[arg-type]
                    )
        except (GeneratorExit, asyncio.CancelledError):
            self.aborted.append(request.request_id)
            raise

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def load_lora(self, lora: LoRASpec) -> None:
        config = Path(lora.path) / "adapter_config.json"
        if not config.is_file():
            raise EngineError(f"cannot load adapter {lora.name}: {config} is missing")
        try:
            json.loads(config.read_text())
        except ValueError as exc:
            raise EngineError(f"cannot load adapter {lora.name}: bad adapter_config.json ({exc})") from exc
        self.loaded[lora.name] = lora

    async def unload_lora(self, lora: LoRASpec) -> None:
        self.loaded.pop(lora.name, None)

    async def list_loras(self) -> list[str]:
        return sorted(self.loaded)

    async def check_health(self) -> None:
        if not self.started:
            raise EngineError("engine not started")

    async def shutdown(self) -> None:
        self.started = False
