"""Templates: turn a raw row into an `Example` (chat messages, prompt/completion, or plain text).

A template is registered by name with the columns it needs (`register_template`). Task templates
(summarization, classification, translation, code, instruction) produce chat examples, so task adapters
are served through the same chat API and trained with assistant-only loss; `text` feeds domain
adaptation (continued pre-training) and `completion` plain prompt/completion pairs. The preference
templates feed the dpo / kto styles: `preference` (prompt, chosen, rejected) and `kto` (prompt, completion,
label); their prompt is a string or a list of chat messages ending with a user turn, an answer a string
(or TRL's conversational form, a list holding one assistant message, which may carry `tool_calls`). Like chat
rows they may carry `tools` and `tool_choice` (preference records from tool-calling traffic): the same
reading and the same drop reasons as below.

Chat rows may be tool-calling conversations, as TRL reads them: an optional `tools` column (the function
definitions, a list or its JSON; `tool_choice` beside it), assistant messages with `tool_calls`, `tool`
messages with `tool_call_id`. Unreadable tool calls (arguments that are not a JSON object, e.g. cut short)
drop the row as `bad_tool_calls`, unreadable definitions as `bad_tools`, calls a named tool choice cannot
produce as `tool_choice_mismatch` (`training.data.tools`).

`resolve_columns(source, available)` checks a source's columns against its template before any row is
read in full, which is how a wrong column name fails in preflight.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from training.config import PREFERENCE_TEMPLATES, TemplateOptions
from training.data.example import Example, Message, RowRejected, tool_calls_text
from training.data.tools import (
    ToolChoice,
    check_tool_choice,
    parse_tool_calls,
    parse_tool_choice,
    parse_tools,
)
from training.errors import DataError

__all__ = [
    "TEMPLATES",
    "Template",
    "check_template_for_style",
    "format_row",
    "register_template",
    "resolve_columns",
    "resolve_template",
]

Formatter = Callable[[Mapping[str, Any], TemplateOptions, str], Example]


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    build: Formatter


TEMPLATES: dict[str, Template] = {}
_ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
}


def register_template(
    name: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Callable[[Formatter], Formatter]:
    def deco(fn: Formatter) -> Formatter:
        TEMPLATES[name] = Template(name, required, optional, fn)
        return fn

    return deco


def _text(row: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise RowRejected("empty", f"column '{key}' is null")
        return ""
    if not isinstance(value, str):
        if isinstance(value, int | float | bool):
            return str(value)
        raise RowRejected("bad_value", f"column '{key}' holds a {type(value).__name__}, expected text")
    if required and not value.strip():
        raise RowRejected("empty", f"column '{key}' is empty")
    return value


def _with_system(messages: list[Message], options: TemplateOptions) -> tuple[Message, ...]:
    if options.system_prompt and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": options.system_prompt}, *messages]
    return tuple(messages)


def _task(user: str, answer: str, options: TemplateOptions, source: str) -> Example:
    messages: list[Message] = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return Example(kind="chat", source=source, messages=_with_system(messages, options))


def _message(item: Any) -> Message:
    """One chat message: role and text content; an assistant's `tool_calls` (content may then be empty),
    a tool result's `tool_call_id` and `name` (see `training.data.tools`)."""
    if not isinstance(item, Mapping):
        raise RowRejected("bad_messages", "a message is not an object")
    role = _ROLE_ALIASES.get(str(item.get("role", item.get("from", ""))).lower())
    content = item.get("content", item.get("value"))
    calls = parse_tool_calls(item.get("tool_calls")) if role == "assistant" else []
    if content is None and calls:
        content = ""
    if role is None or not isinstance(content, str):
        raise RowRejected("bad_messages", "a message lacks a known role or text content")
    message: Message = {"role": role, "content": content}
    if calls:
        message["tool_calls"] = calls
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if isinstance(item.get(key), str) and item[key]:
                message[key] = item[key]
    return message


@register_template("chat", required=("messages",), optional=("tools", "tool_choice"))
def _chat(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    raw = row.get("messages")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise RowRejected("bad_messages", "messages is a string that is not JSON") from None
    if not isinstance(raw, list) or not raw:
        raise RowRejected("empty", "messages is empty or not a list")
    messages = [_message(item) for item in raw]
    if not any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls")) for m in messages):
        raise RowRejected("no_assistant_turn", "no assistant message with content or tool calls")
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # trailing user turns carry no target
    tools, choice = _tools(row)
    check_tool_choice(messages, choice)
    return Example(
        kind="chat",
        source=source,
        messages=_with_system(messages, options),
        tools=tools,
        tool_choice=choice,
    )


@register_template("instruction", required=("instruction", "output"), optional=("input",))
def _instruction(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    extra = _text(row, "input", required=False).strip()
    user = _text(row, "instruction") + (f"\n\n{extra}" if extra else "")
    return _task(user, _text(row, "output"), options, source)


@register_template("completion", required=("prompt", "completion"))
def _completion(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    return Example(
        kind="completion", source=source, prompt=_text(row, "prompt"), completion=_text(row, "completion")
    )


@register_template("summarization", required=("document", "summary"))
def _summarization(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    instruction = options.instruction or "Summarize the following text in one or two sentences."
    return _task(f"{instruction}\n\n{_text(row, 'document')}", _text(row, "summary"), options, source)


@register_template("classification", required=("text", "label"))
def _classification(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    label = _text(row, "label").strip()
    if options.labels is not None and label not in options.labels:
        raise RowRejected("invalid_label", f"label {label!r} is not one of {options.labels}")
    choices = f" Answer with one of: {', '.join(options.labels)}." if options.labels else ""
    instruction = options.instruction or f"Classify the following text.{choices}"
    return _task(f"{instruction}\n\nText: {_text(row, 'text')}", label, options, source)


@register_template("translation", required=("source", "target"))
def _translation(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    instruction = (
        options.instruction
        or f"Translate the following text from {options.source_lang} to {options.target_lang}."
    )
    return _task(f"{instruction}\n\n{_text(row, 'source')}", _text(row, "target"), options, source)


@register_template("code", required=("prompt", "code"), optional=("language",))
def _code(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    language = _text(row, "language", required=False).strip() or options.language
    instruction = options.instruction or (
        f"Write {language} code for this task." if language else "Write code for this task."
    )
    return _task(f"{instruction}\n\n{_text(row, 'prompt')}", _text(row, "code"), options, source)


def _prompt_turns(row: Mapping[str, Any], options: TemplateOptions) -> tuple[tuple[Message, ...], str]:
    """A preference prompt: (chat turns ending with a user or tool message, "") or ((), plain text)."""
    raw = row.get("prompt")
    if isinstance(raw, str):
        if not raw.strip():
            raise RowRejected("empty", "column 'prompt' is empty")
        return (), raw
    if not isinstance(raw, list) or not raw:
        raise RowRejected("empty", "prompt is empty or neither text nor a list of messages")
    turns = list(_chat({"messages": [*raw, {"role": "assistant", "content": "-"}]}, options, "").messages)
    turns.pop()  # the placeholder answer
    if not turns or turns[-1]["role"] not in ("user", "tool"):
        raise RowRejected("bad_prompt", "a chat prompt must end with a user (or tool result) message")
    return tuple(turns), ""


def _answer(
    row: Mapping[str, Any], key: str, tool_choice: ToolChoice | None
) -> tuple[str, tuple[dict[str, Any], ...]]:
    """A preference answer: (text, tool calls). Text, or TRL's conversational form - one assistant message,
    `{"role": "assistant", "content": ..., "tool_calls": [...]}` (content may be empty beside calls)."""
    value = row.get(key)
    calls: list[dict[str, Any]] = []
    if isinstance(value, list):  # TRL's conversational form: [{"role": "assistant", "content": ...}]
        if len(value) != 1 or not isinstance(value[0], Mapping) or value[0].get("role") != "assistant":
            raise RowRejected("bad_value", f"column '{key}' must be text or one assistant message")
        calls = parse_tool_calls(value[0].get("tool_calls"))
        value = value[0].get("content")
        if calls:
            check_tool_choice([{"role": "assistant", "tool_calls": calls}], tool_choice)
            return _text({key: value}, key, required=False), tuple(calls)
    return _text({key: value}, key), ()


def _tools(row: Mapping[str, Any]) -> tuple[tuple[dict[str, Any], ...], ToolChoice | None]:
    tools = parse_tools(row.get("tools"))
    return tools, parse_tool_choice(row.get("tool_choice")) if tools else None


_LABELS = {
    "true": True,
    "1": True,
    "yes": True,
    "desirable": True,
    "good": True,
    "false": False,
    "0": False,
    "no": False,
    "undesirable": False,
    "bad": False,
}


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    raise RowRejected("bad_label", f"label {value!r} is not true/false (desirable/undesirable)")


@register_template("preference", required=("prompt", "chosen", "rejected"), optional=("tools", "tool_choice"))
def _preference(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    messages, prompt = _prompt_turns(row, options)
    tools, choice = _tools(row)
    (chosen, chosen_calls), (rejected, rejected_calls) = (
        _answer(row, "chosen", choice),
        _answer(row, "rejected", choice),
    )
    same_text = " ".join(chosen.split()) == " ".join(rejected.split())
    if same_text and tool_calls_text(chosen_calls) == tool_calls_text(rejected_calls):
        raise RowRejected("same_answers", "chosen and rejected are the same answer")
    return Example(
        kind="preference",
        source=source,
        messages=messages,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        tools=tools,
        tool_choice=choice,
        chosen_calls=chosen_calls,
        rejected_calls=rejected_calls,
    )


@register_template("kto", required=("prompt", "completion", "label"), optional=("tools", "tool_choice"))
def _kto(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    messages, prompt = _prompt_turns(row, options)
    tools, choice = _tools(row)
    completion, calls = _answer(row, "completion", choice)
    return Example(
        kind="kto",
        source=source,
        messages=messages,
        prompt=prompt,
        completion=completion,
        label=_label(row.get("label")),
        tools=tools,
        tool_choice=choice,
        completion_calls=calls,
    )


@register_template("text", required=("text",))
def _plain_text(row: Mapping[str, Any], options: TemplateOptions, source: str) -> Example:
    return Example(kind="text", source=source, text=_text(row, "text"))


def resolve_template(
    template: str, columns: Mapping[str, str], available: list[str], where: str = "data source"
) -> str:
    """The template for `auto`: chat if rows have messages, preference for prompt/chosen/rejected, kto for
    prompt/completion/label, completion for prompt/completion, else text."""
    if template != "auto":
        return template

    def has(name: str) -> bool:
        return columns.get(name, name) in available

    if has("messages"):
        return "chat"
    if has("prompt") and has("chosen") and has("rejected"):
        return "preference"
    if has("prompt") and has("completion") and has("label"):
        return "kto"
    if has("prompt") and has("completion"):
        return "completion"
    if has("text"):
        return "text"
    raise DataError(
        f"{where}: cannot pick a template for columns {available}: expected 'messages' (chat), "
        "'prompt'+'chosen'+'rejected' (preference), 'prompt'+'completion'+'label' (kto), "
        "'prompt'+'completion' or 'text'; set template: and columns: in the source"
    )


def resolve_columns(
    template: str, columns: Mapping[str, str], available: list[str], where: str
) -> dict[str, str]:
    """Template column -> dataset column, checked against the dataset's columns (DataError names what is
    missing and what exists)."""
    spec = TEMPLATES[template]
    unknown = sorted(set(columns) - set(spec.required) - set(spec.optional))
    if unknown:
        raise DataError(
            f"{where}: columns maps {unknown}, which template '{template}' does not use "
            f"(it reads {', '.join(spec.required + spec.optional)})"
        )
    mapping = {name: columns.get(name, name) for name in spec.required + spec.optional}
    missing = [
        f"'{mapping[n]}'" + (f" (for '{n}')" if mapping[n] != n else "")
        for n in spec.required
        if mapping[n] not in available
    ]
    if missing:
        raise DataError(
            f"{where}: column {', '.join(missing)} not found; template '{template}' needs "
            f"{', '.join(spec.required)}; the data has columns: {', '.join(available) or '(none)'}. "
            "Rename them with columns: {template_column: data_column}"
        )
    return mapping


def format_row(
    row: Mapping[str, Any], template: str, mapping: Mapping[str, str], options: TemplateOptions, source: str
) -> Example:
    """Apply a template to one raw row (raises RowRejected with the drop reason)."""
    canonical = {name: row.get(col) for name, col in mapping.items()}
    return TEMPLATES[template].build(canonical, options, source)


def check_template_for_style(style: str, template: str, where: str) -> None:
    """DataError when a source's (resolved) template does not fit the run's style: dpo trains on
    preference pairs, kto on kto records or pairs, every other style on SFT examples."""
    allowed = PREFERENCE_TEMPLATES.get(style)
    if allowed is None and template in ("preference", "kto"):
        raise DataError(
            f"{where}: the rows are {template} records (prompt/chosen/rejected or prompt/completion/label); "
            "train them with style: dpo or kto"
        )
    if allowed is not None and template not in allowed:
        columns = "prompt/chosen/rejected" + (" or prompt/completion/label" if "kto" in allowed else "")
        raise DataError(
            f"{where}: style '{style}' trains on {' or '.join(allowed)} records (columns {columns}), "
            f"but this source is read with template '{template}'"
        )
