"""`Example`: one formatted training example, the unit every cleaning, splitting and tokenizing step sees.

SFT kinds: `chat` (a list of role/content messages; loss on assistant turns only), `completion` (plain
prompt + completion; loss on the completion), `text` (plain text for domain adaptation; loss everywhere).
Preference kinds (styles dpo / kto): `preference` (a prompt, a chosen and a rejected answer) and `kto` (a
prompt, one answer and its label: True = desirable). Their prompt is either chat turns (`messages`, ending
with a user turn) or plain text (`prompt`).

`content_hash` identifies an example by its content alone, so dataset hashes are stable; `split_key` decides
the split: the content hash, except for preference kinds, whose records sharing a prompt share a split (a
corrected request yields a desirable and an undesirable record for the same prompt; neither may leak into
the held-out split of the other).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = ["PREFERENCE_KINDS", "Example", "ExampleKind", "Message", "RowRejected"]

ExampleKind = Literal["chat", "completion", "text", "preference", "kto"]
PREFERENCE_KINDS = ("preference", "kto")
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

    @property
    def is_preference(self) -> bool:
        return self.kind in PREFERENCE_KINDS

    def prompt_content(self) -> list[Message] | str:
        """preference / kto: the prompt as TRL reads it - chat turns (conversational) or plain text."""
        return [dict(m) for m in self.messages] if self.messages else self.prompt

    def content(self) -> dict[str, Any]:
        if self.kind == "chat":
            return {"kind": "chat", "messages": [dict(m) for m in self.messages]}
        if self.kind == "completion":
            return {"kind": "completion", "prompt": self.prompt, "completion": self.completion}
        if self.kind == "preference":
            return {
                "kind": "preference",
                "prompt": self.prompt_content(),
                "chosen": self.chosen,
                "rejected": self.rejected,
            }
        if self.kind == "kto":
            return {
                "kind": "kto",
                "prompt": self.prompt_content(),
                "completion": self.completion,
                "label": self.label,
            }
        return {"kind": "text", "text": self.text}

    @property
    def content_hash(self) -> str:
        return _hash(self.content())

    @property
    def split_key(self) -> str:
        """What the split is drawn from: the prompt for preference kinds, else the whole content."""
        if self.is_preference:
            return _hash({"prompt": self.prompt_content()})
        return self.content_hash

    def target_text(self) -> str:
        """The text the loss is computed on (preference: the chosen answer)."""
        if self.kind == "chat":
            return "\n".join(m["content"] for m in self.messages if m["role"] == "assistant")
        if self.kind in ("completion", "kto"):
            return self.completion
        if self.kind == "preference":
            return self.chosen
        return self.text

    def targets(self) -> tuple[str, ...]:
        """Every answer of the example (preference: chosen and rejected); each must be non-empty."""
        return (self.chosen, self.rejected) if self.kind == "preference" else (self.target_text(),)

    def prompt_text(self) -> str:
        if self.messages:
            return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)
        return self.prompt

    def all_text(self) -> str:
        """Every piece of text (what dedupe compares; a kto label is not text: records differing only in
        their label are conflicts, see `training.data.clean`)."""
        if self.kind == "chat":
            return self.prompt_text()
        if self.kind == "completion":
            return f"{self.prompt}\n{self.completion}"
        if self.kind == "preference":
            return f"{self.prompt_text()}\nchosen: {self.chosen}\nrejected: {self.rejected}"
        if self.kind == "kto":
            return f"{self.prompt_text()}\nanswer: {self.completion}"
        return self.text

    def map_text(self, fn: Callable[[str], str]) -> Example:
        """A copy with `fn` applied to every piece of text (used by PII scrubbing)."""
        messages = tuple({**m, "content": fn(m["content"])} for m in self.messages)
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
            )
        if self.kind == "kto":
            return replace(self, messages=messages, prompt=fn(self.prompt), completion=fn(self.completion))
        return replace(self, text=fn(self.text))

    def to_record(self) -> dict[str, Any]:
        """JSON record for the split files in the run folder (what evals read)."""
        return {"source": self.source, "hash": self.content_hash, **self.content()}


def _hash(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
