"""Tool-calling chat records: their shape, and the one rule for how they become training text.

Shape (what `Example` holds; what TRL's SFTTrainer and transformers' `apply_chat_template(messages,
tools=...)` read from a conversational dataset with a `tools` column):

* `tools`: OpenAI function definitions, `[{"type": "function", "function": {"name", "description",
  "parameters"}}]`; `tool_choice` as the client sent it: "auto", "required", "none" or
  `{"type": "function", "function": {"name": ...}}` (None: auto);
* an assistant message may carry `tool_calls`: `[{"type": "function", "function": {"name", "arguments"}}]`
  (arguments a JSON object, as chat templates read them; `id` kept when given);
* a `tool` message carries the call's result as `content` and `tool_call_id` (and `name` when given).

Rendering mirrors serving, so an adapter is trained on the prompts it is served and emits what serving
parses (`serving/engine/vllm_engine.py` `VLLMEngine._render` renders the prompt, `serving/completions.py`
`_read_tool_calls` reads the answer):

1. The tool definitions go to the chat template only when it renders them (its source mentions `tools`)
   and `tool_choice` is not "none"; otherwise the prompt holds none (serving shows none either: a forced
   tool choice's grammar then constrains the answer).
2. Tool calls the template cannot render (its source does not mention `tool_calls`) are appended to the
   assistant message's content as JSON: `[{"name": ..., "arguments": {...}}]`.
3. The trained answer (the last assistant turn), by `tool_choice`:
   * a named function: its arguments as a JSON object (serving reads the whole answer as the arguments);
   * "required": `[{"name": ..., "parameters": {...}}]`, vLLM's array for required tool calls (the
     grammar's schema and what serving parses);
   * "auto" (or none given): as rule 2 - the chat template's own rendering where it renders tool calls
     (e.g. a hermes template's `<tool_call>`, which the tool parser reads), else JSON in the content.

JSON is written by `json.dumps(..., ensure_ascii=False)`, as serving writes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from training.data.example import RowRejected, map_tool_calls, tool_calls_text

__all__ = [
    "ToolChoice",
    "calls_from_correction",
    "chat_for_template",
    "check_tool_choice",
    "map_tool_calls",
    "named_function",
    "parse_tool_calls",
    "parse_tool_choice",
    "parse_tools",
    "renders_tool_calls",
    "renders_tools",
    "served_calls_message",
    "tool_calls_text",
    "tool_names",
]

ToolChoice = str | dict[str, Any]
"""A request's `tool_choice`: "auto", "required", "none" or {"type": "function", "function": {"name"}}."""


# ------------------------------------------------------------------------------------------ parsing


def _json(value: Any, reason: str, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise RowRejected(reason, f"{what} is a string that is not JSON") from None
    return value


def parse_tools(value: Any) -> tuple[dict[str, Any], ...]:
    """Tool definitions (a list, or its JSON) in OpenAI's form; a bare function definition (name,
    description, parameters) is wrapped. RowRejected('bad_tools') when they are not definitions."""
    if value is None or value == "":
        return ()
    raw = _json(value, "bad_tools", "tools")
    if not isinstance(raw, list):
        raise RowRejected("bad_tools", "tools is not a list of function definitions")
    tools: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise RowRejected("bad_tools", "a tool is not an object")
        function = item.get("function", item if "name" in item else None)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise RowRejected("bad_tools", "a tool lacks a function name")
        if item.get("type", "function") != "function":
            raise RowRejected("bad_tools", f"tool type {item.get('type')!r} is not 'function'")
        tools.append({"type": "function", "function": dict(function)})
    return tuple(tools)


def parse_tool_choice(value: Any) -> ToolChoice | None:
    """`tool_choice` as the client sent it (None when not given). RowRejected('bad_tools') otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        value = _json(value, "bad_tools", "tool_choice")
    if isinstance(value, str) and value in ("auto", "required", "none"):
        return value
    if isinstance(value, Mapping):
        function = value.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return {"type": "function", "function": {"name": function["name"]}}
    raise RowRejected("bad_tools", f"tool_choice {value!r} is not auto, required, none or a named function")


def check_tool_choice(messages: Sequence[Mapping[str, Any]], tool_choice: ToolChoice | None) -> None:
    """A named tool choice's answer is exactly one call of that function (all serving can produce):
    RowRejected('tool_choice_mismatch') for calls of anything else (e.g. a correction calling another
    function)."""
    named = named_function(tool_choice)
    calls = messages[-1].get("tool_calls") if messages else None
    if named is not None and calls and [c["function"]["name"] for c in calls] != [named]:
        raise RowRejected("tool_choice_mismatch", f"tool_choice forces one call of {named!r}")


def named_function(tool_choice: ToolChoice | None) -> str | None:
    """The function a named tool choice forces (None for the string choices)."""
    if isinstance(tool_choice, Mapping):
        return str(tool_choice["function"]["name"])
    return None


def tool_names(tools: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(t["function"]["name"]) for t in tools}


def _arguments(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowRejected("bad_tool_calls", "tool call arguments are not JSON") from None
    if not isinstance(value, dict):
        raise RowRejected("bad_tool_calls", "tool call arguments are not a JSON object")
    return value


def parse_tool_calls(value: Any) -> list[dict[str, Any]]:
    """Tool calls (a list, or its JSON) in the shape chat templates read: `{"type": "function", "function":
    {"name", "arguments": {...}}}` (`id` kept). Reads OpenAI's form (arguments a JSON string), the request
    log's `{"name", "arguments"}` and vLLM's required `{"name", "parameters"}`. RowRejected('bad_tool_calls')
    for anything else, e.g. arguments cut short by max_tokens."""
    if value is None or value == "":
        return []
    raw = _json(value, "bad_tool_calls", "tool_calls")
    if not isinstance(raw, list):
        raise RowRejected("bad_tool_calls", "tool_calls is not a list")
    calls: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise RowRejected("bad_tool_calls", "a tool call is not an object")
        function = item.get("function", item)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise RowRejected("bad_tool_calls", "a tool call lacks a function name")
        arguments = function.get("arguments", function.get("parameters"))
        call: dict[str, Any] = {}
        if isinstance(item.get("id"), str) and item["id"]:
            call["id"] = item["id"]
        call["type"] = "function"
        call["function"] = {"name": function["name"], "arguments": _arguments(arguments)}
        calls.append(call)
    return calls


def served_calls_message(response: str | None, calls: Any, tool_choice: Any) -> dict[str, Any]:
    """The assistant turn of a served answer that is tool calls (as logged): the calls, with the text a tool
    parser left beside them for `tool_choice` auto (or unset); a forced choice's text is the calls
    themselves, so it gets none."""
    content = (response or "") if tool_choice in ("auto", None) else ""
    return {"role": "assistant", "content": content, "tool_calls": calls}


def calls_from_correction(
    text: str, tools: Sequence[Mapping[str, Any]], tool_choice: ToolChoice | None
) -> list[dict[str, Any]] | None:
    """The tool calls a feedback correction states, or None when it is an answer in words.

    Corrections are text. One that is JSON naming defined functions - `[{"name", "arguments"}]` (or
    "parameters", or one such object), or for a named tool choice the arguments object alone - is read as
    tool calls; anything else stays a text answer."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    names, named = tool_names(tools), named_function(tool_choice)
    if isinstance(value, dict):
        is_call = value.get("name") in names and ("arguments" in value or "parameters" in value)
        value = [value if is_call or named is None else {"name": named, "arguments": value}]
    if not isinstance(value, list) or not value:
        return None
    try:
        calls = parse_tool_calls(value)
    except RowRejected:
        return None
    return calls if all(c["function"]["name"] in names for c in calls) else None


# ---------------------------------------------------------------------------------------- rendering


def _forced_answer(calls: Sequence[Mapping[str, Any]], tool_choice: ToolChoice | None) -> str | None:
    """Rule 3 for forced tool choices (None for auto): the text the grammar-constrained answer is."""
    if named_function(tool_choice) is not None:
        return json.dumps(calls[0]["function"]["arguments"], ensure_ascii=False)
    if tool_choice == "required":
        return json.dumps(
            [{"name": c["function"]["name"], "parameters": c["function"]["arguments"]} for c in calls],
            ensure_ascii=False,
        )
    return None


def _template(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else ""


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template has a place for tool definitions (serving's test)."""
    return "tools" in _template(tokenizer)


def renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the chat template renders assistant tool calls (serving's test)."""
    return "tool_calls" in _template(tokenizer)


def chat_for_template(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    tool_choice: ToolChoice | None,
    tokenizer: Any,
    *,
    answer: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) as this tokenizer's chat template is given them, by rules 1-3 above. `answer`:
    the last message is the trained answer (rule 3); False for a prompt (every turn is history)."""
    shown = bool(tools) and tool_choice != "none" and renders_tools(tokenizer)
    given_tools = [dict(t) for t in tools] if shown else None
    keep_calls = renders_tool_calls(tokenizer)
    last = len(messages) - 1 if answer else -1
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        m = dict(message)
        calls = m.pop("tool_calls", None)
        if calls:
            forced = _forced_answer(calls, tool_choice) if i == last else None
            if forced is not None:
                m["content"] = f"{m.get('content') or ''}{forced}"
            elif keep_calls:
                m["tool_calls"] = [dict(c) for c in calls]
            else:
                m["content"] = f"{m.get('content') or ''}{tool_calls_text(calls)}"
        out.append(m)
    return out, given_tools
