"""`Example`: one formatted training example, the unit every cleaning, splitting and tokenizing step sees.

Three kinds: `chat` (a list of role/content messages; loss on assistant turns only), `completion` (plain
prompt + completion; loss on the completion), `text` (plain text for domain adaptation; loss everywhere).
`content_hash` identifies an example by its content alone, so splits and dataset hashes are stable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = ["Example", "ExampleKind", "Message", "RowRejected"]

ExampleKind = Literal["chat", "completion", "text"]
Message = dict[str, str]


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
    prompt: str = ""
    completion: str = ""
    text: str = ""

    def content(self) -> dict[str, Any]:
        if self.kind == "chat":
            return {"kind": "chat", "messages": [dict(m) for m in self.messages]}
        if self.kind == "completion":
            return {"kind": "completion", "prompt": self.prompt, "completion": self.completion}
        return {"kind": "text", "text": self.text}

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def target_text(self) -> str:
        """The text the loss is computed on."""
        if self.kind == "chat":
            return "\n".join(m["content"] for m in self.messages if m["role"] == "assistant")
        if self.kind == "completion":
            return self.completion
        return self.text

    def all_text(self) -> str:
        if self.kind == "chat":
            return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)
        if self.kind == "completion":
            return f"{self.prompt}\n{self.completion}"
        return self.text

    def map_text(self, fn: Callable[[str], str]) -> Example:
        """A copy with `fn` applied to every piece of text (used by PII scrubbing)."""
        if self.kind == "chat":
            return replace(self, messages=tuple({**m, "content": fn(m["content"])} for m in self.messages))
        if self.kind == "completion":
            return replace(self, prompt=fn(self.prompt), completion=fn(self.completion))
        return replace(self, text=fn(self.text))

    def to_record(self) -> dict[str, Any]:
        """JSON record for the split files in the run folder (what evals read)."""
        return {"source": self.source, "hash": self.content_hash, **self.content()}
