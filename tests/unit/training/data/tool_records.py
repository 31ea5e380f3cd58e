"""Tool-calling test data, one copy for the unit and the integration tests: tool definitions, a chat template
that renders tools (hermes style, as Qwen2.5's, shortened), the request log's columns as serving writes them
(`serving/completions.py`) and the prompt serving renders. The integration tests import it as
`unit.training.data.tool_records` (tests/ is on the import path: tests/conftest.py is a rootdir conftest)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
EMAIL = {
    "type": "function",
    "function": {
        "name": "send_email",
        "description": "Send an email.",
        "parameters": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to", "body"],
        },
    },
}
TOOLS = [WEATHER, EMAIL]

# A chat template that renders tools and tool calls (Qwen2.5 / hermes style, shortened).
HERMES_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\nYou can call functions. <tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + call.function.name + \'", "arguments": \' }}'
    "{{- call.function.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tools_log(choice: Any, tools: list[dict[str, Any]] | None = None) -> str:
    """The request log's `tools` column: `{"tool_choice", "tools"}` as JSON (serving's `tools_log`)."""
    return json.dumps({"tool_choice": choice, "tools": tools or TOOLS})


def calls_log(*calls: tuple[str, dict[str, Any] | str]) -> str:
    """The request log's `tool_calls` column: `[{"name", "arguments"}]`, arguments as the answer's text."""
    return json.dumps(
        [
            {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}
            for name, args in calls
        ]
    )


@dataclass
class Logged:
    """One served request (and its feedback) as serving logs it."""

    id: str
    messages: list[dict[str, Any]]
    response: str | None
    tools: str | None = None
    tool_calls: str | None = None
    thumbs: int | None = 1
    correction: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)


def served_prompt(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], choice: Any
) -> str:
    """The prompt serving renders for a request (`VLLMEngine._render`, no engine started)."""
    from serving.engine.base import GenerationRequest, SamplingSettings
    from serving.engine.vllm_engine import VLLMEngine, VLLMEngineConfig

    engine = VLLMEngine(VLLMEngineConfig(model="unused"))
    engine._tokenizer, engine._engine = tokenizer, object()  # _render only needs the tokenizer
    given = tuple(tools) if tools and choice != "none" else None
    request = GenerationRequest("r", SamplingSettings(), messages=list(messages), tools=given)
    return str(engine._render(request)[0])
