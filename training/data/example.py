"""`Example`: one formatted training example, the unit every cleaning, splitting and tokenizing step sees.

SFT kinds: `chat` (a list of role/content messages; loss on assistant turns only), `completion` (plain
prompt + completion; loss on the completion), `text` (plain text for domain adaptation; loss everywhere).
Preference kinds (styles dpo / kto): `preference` (a prompt, a chosen and a rejected answer) and `kto` (a
prompt, one answer and its label: True = desirable). Their prompt is either chat turns (`messages`, ending
with a user or tool turn) or plain text (`prompt`).

Chat examples may be tool-calling conversations (see `training.data.tools`): `tools` holds the function
definitions and `tool_choice` the request's choice; assistant messages may carry `tool_calls` (arguments as
JSON objects) and `tool` messages a `tool_call_id`. Preference examples from tool traffic carry the same
`tools` / `tool_choice` (the prompt as it was served), and each answer may be tool calls (`chosen_calls`,
`rejected_calls`, kto `completion_calls`, with the answer's text beside them). Cleaning reads tool calls as
their JSON text (`tool_calls_text`), and PII scrubbing reaches every string in their arguments; the tool
definitions are the application's schema, not user text: they are neither scrubbed nor compared by dedupe.

`content_hash` identifies an example by its content alone, so dataset hashes are stable; `split_key` decides
the split: the content hash, except for preference kinds, whose records sharing a prompt share a split (a
corrected request yields a desirable and an undesirable record for the same prompt; neither may leak into
the held-out split of the other).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = [
    "PREFERENCE_KINDS",
    "Example",
    "ExampleKind",
    "Message",
    "RowRejected",
    "map_tool_calls",
    "tool_calls_text",
]

ExampleKind = Literal["chat", "completion", "text", "preference", "kto"]
PREFERENCE_KINDS = ("preference", "kto")
Message = dict[str, Any]
"""`role` and `content` (text); an assistant message may add `tool_calls`, a tool message `tool_call_id`."""


class RowRejected(Exception):
    """A row cannot become an example; `reason` is the drop reason counted in the data card."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Example:
    kind: ExampleKind
    source: str
    messages: tuple[Message, ...] = ()
    """chat: the conversation; preference / kto: the prompt's chat turns (empty for a plain-text prompt)."""
    prompt: str = ""
    """completion; preference / kto with a plain-text prompt."""
    completion: str = ""
    """completion; kto: the judged answer."""
    text: str = ""
    chosen: str = ""
    """preference: the better answer."""
    rejected: str = ""
    """preference: the worse answer."""
    label: bool | None = None
    """kto: True = desirable, False = undesirable."""
    tools: tuple[dict[str, Any], ...] = ()
    """chat / preference / kto: the function definitions the request was given (OpenAI's `tools`); empty
    without tools."""
    tool_choice: str | dict[str, Any] | None = None
    """With tools: the request's `tool_choice` ("auto", "required", "none" or a named function)."""
    chosen_calls: tuple[dict[str, Any], ...] = ()
    """preference: the better answer's tool calls (`chosen` is then the text beside them, often empty)."""
    rejected_calls: tuple[dict[str, Any], ...] = ()
    """preference: the worse answer's tool calls."""
    completion_calls: tuple[dict[str, Any], ...] = ()
    """kto: the judged answer's tool calls."""

    @property
    def has_tool_calls(self) -> bool:
        """An assistant turn or an answer calls tools (a tool-calling record, counted in the data card)."""
        answers = (self.chosen_calls, self.rejected_calls, self.completion_calls)
        return any(answers) or any(m.get("tool_calls") for m in self.messages if m["role"] == "assistant")

    def answers(self) -> list[tuple[str, tuple[dict[str, Any], ...]]]:
        """preference: (text, tool calls) of the chosen and the rejected answer; kto: of the judged one."""
        if self.kind == "preference":
            return [(self.chosen, self.chosen_calls), (self.rejected, self.rejected_calls)]
        return [(self.completion, self.completion_calls)]

    @property
    def is_preference(self) -> bool:
        return self.kind in PREFERENCE_KINDS

    def prompt_content(self) -> list[Message] | str:
        """preference / kto: the prompt as TRL reads it - chat turns (conversational) or plain text."""
        return [dict(m) for m in self.messages] if self.messages else self.prompt

    def _tool_content(self) -> dict[str, Any]:
        """The tool parts of a preference / kto example's content; empty without tools or calls, so the
        hash of a record without them is unchanged."""
        out: dict[str, Any] = {}
        if self.tools:
            out["tools"] = [dict(t) for t in self.tools]
            out["tool_choice"] = self.tool_choice
        for key in ("chosen_calls", "rejected_calls", "completion_calls"):
            if getattr(self, key):
                out[key] = [dict(c) for c in getattr(self, key)]
        return out

    def content(self) -> dict[str, Any]:
        if self.kind == "chat":
            out: dict[str, Any] = {"kind": "chat", "messages": [dict(m) for m in self.messages]}
            if self.tools:  # only then: the hash of a chat example without tools is unchanged
                out["tools"] = [dict(t) for t in self.tools]
                out["tool_choice"] = self.tool_choice
            return out
        if self.kind == "completion":
            return {"kind": "completion", "prompt": self.prompt, "completion": self.completion}
        if self.kind == "preference":
            return {
                "kind": "preference",
                "prompt": self.prompt_content(),
                "chosen": self.chosen,
                "rejected": self.rejected,
                **self._tool_content(),
            }
        if self.kind == "kto":
            return {
                "kind": "kto",
                "prompt": self.prompt_content(),
                "completion": self.completion,
                "label": self.label,
                **self._tool_content(),
            }
        return {"kind": "text", "text": self.text}

    @property
    def content_hash(self) -> str:
        return _hash(self.content())

    @property
    def split_key(self) -> str:
        """What the split is drawn from: the prompt for preference kinds, else the whole content."""
        if self.is_preference:
            if self.tools:  # the prompt as served includes its tools
                return _hash({"prompt": self.prompt_content(), "tools": [dict(t) for t in self.tools]})
            return _hash({"prompt": self.prompt_content()})
        return self.content_hash

    def target_text(self) -> str:
        """The text the loss is computed on (preference: the chosen answer)."""
        if self.kind == "chat":
            return "\n".join(_message_text(m) for m in self.messages if m["role"] == "assistant")
        if self.kind == "completion":
            return self.completion
        if self.kind == "kto":
            return _answer_text(self.completion, self.completion_calls)
        if self.kind == "preference":
            return _answer_text(self.chosen, self.chosen_calls)
        return self.text

    def targets(self) -> tuple[str, ...]:
        """Every answer of the example (preference: chosen and rejected) with its tool calls as JSON text;
        each must be non-empty."""
        if self.kind == "preference":
            return (self.target_text(), _answer_text(self.rejected, self.rejected_calls))
        return (self.target_text(),)

    def prompt_text(self) -> str:
        if self.messages:
            return "\n".join(f"{m['role']}: {_message_text(m)}" for m in self.messages)
        return self.prompt

    def all_text(self) -> str:
        """Every piece of text (what dedupe compares; a kto label is not text: records differing only in
        their label are conflicts, see `training.data.clean`)."""
        if self.kind == "chat":
            return self.prompt_text()
        if self.kind == "completion":
            return f"{self.prompt}\n{self.completion}"
        if self.kind == "preference":
            chosen, rejected = self.targets()
            return f"{self.prompt_text()}\nchosen: {chosen}\nrejected: {rejected}"
        if self.kind == "kto":
            return f"{self.prompt_text()}\nanswer: {self.target_text()}"
        return self.text

    def map_text(self, fn: Callable[[str], str]) -> Example:
        """A copy with `fn` applied to every piece of text (used by PII scrubbing)."""
        messages = tuple(_map_message(m, fn) for m in self.messages)
        if self.kind == "chat":
            return replace(self, messages=messages)
        if self.kind == "completion":
            return replace(self, prompt=fn(self.prompt), completion=fn(self.completion))
        if self.kind == "preference":
            return replace(
                self,
                messages=messages,
                prompt=fn(self.prompt),
                chosen=fn(self.chosen),
                rejected=fn(self.rejected),
                chosen_calls=tuple(map_tool_calls(self.chosen_calls, fn)),
                rejected_calls=tuple(map_tool_calls(self.rejected_calls, fn)),
            )
        if self.kind == "kto":
            return replace(
                self,
                messages=messages,
                prompt=fn(self.prompt),
                completion=fn(self.completion),
                completion_calls=tuple(map_tool_calls(self.completion_calls, fn)),
            )
        return replace(self, text=fn(self.text))

    def to_record(self) -> dict[str, Any]:
        """JSON record for the split files in the run folder (what evals read)."""
        return {"source": self.source, "hash": self.content_hash, **self.content()}


def _hash(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def tool_calls_text(calls: Sequence[Mapping[str, Any]]) -> str:
    """Tool calls as JSON text, `[{"name": ..., "arguments": {...}}]` (how serving writes them into a chat
    template that cannot render them; see `training.data.tools`)."""
    return json.dumps([dict(c.get("function", c)) for c in calls], ensure_ascii=False)


def _answer_text(text: str, calls: Sequence[Mapping[str, Any]] | None) -> str:
    """An answer's text with its tool calls as JSON text (what cleaning and dedupe read)."""
    return f"{text}{tool_calls_text(calls)}" if calls else text


def _message_text(message: Mapping[str, Any]) -> str:
    """A message's text with its tool calls (what cleaning and dedupe read)."""
    return _answer_text(str(message["content"]), message.get("tool_calls"))


def map_tool_calls(calls: Sequence[Mapping[str, Any]], fn: Callable[[str], str]) -> list[dict[str, Any]]:
    """Tool calls with `fn` applied to every string in their arguments (PII scrubbing). A number that `fn`
    changes (a card number sent as a number) becomes the changed text."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return fn(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            text = fn(str(value))
            return value if text == str(value) else text
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    out: list[dict[str, Any]] = []
    for call in calls:
        function = call["function"]
        out.append({**call, "function": {**function, "arguments": walk(function["arguments"])}})
    return out


def _map_message(message: Mapping[str, Any], fn: Callable[[str], str]) -> Message:
    out = {**message, "content": fn(message["content"])}
    if message.get("tool_calls"):
        out["tool_calls"] = map_tool_calls(message["tool_calls"], fn)
    return out
