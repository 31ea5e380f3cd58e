"""A deterministic in-process engine for unit tests only (never used by the service itself).

It "tokenizes" on whitespace, answers with words derived from a hash of the prompt and the adapter
name (so different adapters give different, reproducible answers), streams one word per step, and
keeps a set of loaded adapters like a real engine. An adapter folder without `adapter_config.json`
fails to load with `EngineError`.

It accepts every `SamplingSettings` field and records each request (`requests`) so tests can see what
reached the engine. A structured output is answered with a minimal JSON instance of the schema (or
`{"answer": ...}` for any JSON object, one of the strings for a `choice`; a `regex` or `grammar` is not
followed); a schema with `"x-fake-invalid": true` is refused as a real
engine refuses a schema it cannot compile. Log-probabilities are made up but well-formed (-0.5 per word,
prompt tokens -1.0, the first None). Token-id prompts read as words `t<id>`. With `tool_parser=True` the
fake "supports tools": answers look like `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` and
`parse_tool_calls` reads them back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from serving.engine.base import (
    EngineError,
    GenerationChunk,
    GenerationRequest,
    InvalidParameterError,
    LoRASpec,
    PromptTooLongError,
    TokenLogprob,
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
        tool_parser: bool = False,
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
        self.tool_parser = tool_parser
        self.requests: list[GenerationRequest] = []  # every request generate() saw, for assertions

    async def start(self) -> None:
        self.started = True

    def _prompt_text(self, request: GenerationRequest) -> str:
        text = self._whole_prompt_text(request)
        keep = request.truncate_prompt_tokens
        if keep is None:
            return text
        words = text.split()
        keep = self.max_model_len if keep == -1 else keep
        return " ".join(words[-keep:] if request.truncation_side == "left" else words[:keep])

    @staticmethod
    def _whole_prompt_text(request: GenerationRequest) -> str:
        if request.messages is not None:
            text = "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in request.messages)
            return text + "\nassistant:" if request.add_generation_prompt else text
        if request.prompt_token_ids is not None:
            return " ".join(f"t{i}" for i in request.prompt_token_ids)
        return request.prompt or ""

    def supports_tools(self) -> bool:
        return self.tool_parser

    def parse_tool_calls(
        self, text: str, tools: tuple[dict[str, Any], ...]
    ) -> tuple[str | None, list[dict[str, str]]]:
        calls = []
        for raw in re.findall(r"<tool_call>(.*?)</tool_call>", text, flags=re.S):
            try:
                call = json.loads(raw)
            except ValueError:
                continue
            calls.append({"name": str(call["name"]), "arguments": json.dumps(call.get("arguments", {}))})
        content = re.sub(r"<tool_call>.*?</tool_call>", "", text, flags=re.S).strip() or None
        return (content, calls) if calls else (text, [])

    def _words(self, request: GenerationRequest, index: int, text: str, lora_name: str | None) -> list[str]:
        """The answer of one choice, as the pieces streamed one per step."""
        sampling = request.sampling
        choice = index if sampling.temperature > 0 else 0  # greedy: n identical choices
        seed = hashlib.sha256(f"{lora_name}|{choice}|{text}".encode()).digest()
        length = 3 + seed[0] % 10
        if sampling.ignore_eos:
            length = sampling.max_tokens
        length = max(length, sampling.min_tokens)
        words = [_WORDS[seed[(step + 1) % len(seed)] % len(_WORDS)] for step in range(length)]
        structured = sampling.structured
        if structured is not None and structured.choice is not None:
            return _pieces(structured.choice[seed[0] % len(structured.choice)])
        if structured is not None and (structured.json_schema is not None or structured.json_object):
            value = (
                _instance(structured.json_schema, words) if structured.json_schema else {"answer": words[0]}
            )
            return _pieces(json.dumps(value))
        if self.tool_parser and request.tools and "tool" in text:
            name = request.tools[0]["function"]["name"]
            return _pieces(f'<tool_call>{{"name": "{name}", "arguments": {{}}}}</tool_call>')
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

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
        structured = request.sampling.structured
        if structured is not None and structured.json_schema and structured.json_schema.get("x-fake-invalid"):
            raise InvalidParameterError("The JSON schema could not be compiled (fake).", structured.param)
        self.generated_with.append(lora_name)
        self.requests.append(request)
        text = self._prompt_text(request)
        sampling = request.sampling
        prompt_logprobs = None
        if sampling.prompt_logprobs is not None:
            prompt_logprobs = [
                TokenLogprob(
                    w if i == 0 else " " + w, i, None if i == 0 else -1.0, () if i == 0 else ((w, -1.0),)
                )
                for i, w in enumerate(text.split())
            ]
        try:
            for index in range(sampling.n):
                pieces = self._words(request, index, text, lora_name)
                stop_at = min(len(pieces), max_tokens)
                for step in range(stop_at):
                    if self.step_delay_s:
                        await asyncio.sleep(self.step_delay_s)
                    piece = pieces[step]
                    finished = step == stop_at - 1
                    reason = None
                    if finished:
                        reason = "length" if stop_at == max_tokens and len(pieces) > max_tokens else "stop"
                    logprobs = None
                    if sampling.logprobs is not None:
                        top = tuple((alt, -0.5 - k) for k, alt in enumerate([piece, " zulu", " yankee"]))
                        logprobs = [TokenLogprob(piece, step, -0.5, top[: sampling.logprobs])]
                    yield GenerationChunk(
                        index=index,
                        text=piece,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=step + 1,
                        finish_reason=reason,  # type: ignore[arg-type]
                        logprobs=logprobs,
                        prompt_logprobs=prompt_logprobs if step == 0 else None,
                        prompt_text=text if step == 0 else None,
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


def _pieces(text: str, size: int = 6) -> list[str]:
    """`text` in streamable pieces of `size` characters."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _instance(schema: dict[str, Any], words: list[str]) -> Any:
    """A small JSON value valid for simple schemas (object, array, scalars, enum, anyOf; no $ref)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], words)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        return {name: _instance(sub, words) for name, sub in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), 1 if "items" in schema else 0)
        return [_instance(schema.get("items", {}), words) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return words[0] if words else "x"
