"""Preference records from user feedback: the rules that turn served answers and their feedback into DPO
pairs (prompt, chosen, rejected) or KTO records (prompt, completion, label).

One `FeedbackAnswer` per served request: its prompt, the served answer, the latest correction and the
latest verdict (thumbs / rating; a correction equal to the served answer counts as an acceptance).

DPO pairs (`preference_rows`):
  * a corrected answer: chosen = the correction, rejected = the served answer;
  * a thumbed-down (or badly rated) answer without a correction: chosen = a good answer to the same prompt
    (the newest correction or accepted answer of another request), rejected = the served answer; without
    such an answer there is no pair (it is still a KTO undesirable record);
  * an accepted answer is never rejected; alone it makes no pair (a KTO desirable record).
KTO records (`kto_rows`): corrections and accepted answers are desirable, corrected and thumbed-down
served answers undesirable.

Tool-calling traffic: a request served with tools gives its records `tools` and `tool_choice` as it was served
(so the preference prompt is the served prompt), and an answer that is tool calls is TRL's conversational
answer, `[{"role": "assistant", "content": ..., "tool_calls": [...]}]` - the served calls as logged, or the
calls a correction states (`training.data.tools.calls_from_correction`). A correction stating the served calls
is an acceptance. They are rendered later, by the one rule of `training.data.tools`; malformed definitions
or calls are passed on as logged, and the template drops (and counts) them.

Pure functions over plain data: `training.data.sources` reads the request log and calls them; the rows
they return go through the `preference` / `kto` templates like file rows, so cleaning, PII scrubbing,
dedupe, splitting and the data card are the same as for any source.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from training.data.example import RowRejected
from training.data.tools import parse_tool_calls, served_calls_message

__all__ = ["Answer", "FeedbackAnswer", "Verdict", "kto_rows", "preference_rows", "prompt_key", "verdict"]

Verdict = Literal["good", "bad"]
Answer = str | list[dict[str, Any]]
"""An answer as a record holds it: text, or one assistant message with tool calls (TRL's conversational
form)."""


def verdict(
    thumbs: int | None, rating: float | None, *, min_rating: float, max_rejected_rating: float
) -> Verdict | None:
    """One feedback row's verdict: thumbs up / rating >= min_rating is good, thumbs down / rating <=
    max_rejected_rating bad, anything else (no signal, a middling rating) None. Thumbs win over a rating."""
    if thumbs is not None and thumbs != 0:
        return "good" if thumbs > 0 else "bad"
    if rating is not None:
        if rating >= min_rating:
            return "good"
        if rating <= max_rejected_rating:
            return "bad"
    return None


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _same_calls(a: Any, b: Any) -> bool:
    """Whether two lists of tool calls call the same functions with the same arguments (unreadable: no)."""
    try:
        return [c["function"] for c in parse_tool_calls(a)] == [c["function"] for c in parse_tool_calls(b)]
    except RowRejected:
        return False


@dataclass(frozen=True)
class FeedbackAnswer:
    """A served answer with its feedback, as the preference rules see it."""

    request_id: str
    prompt: list[dict[str, Any]] | str
    """The chat messages (chat endpoint) or the plain prompt (completions endpoint)."""
    response: str
    correction: str | None = None
    """The latest non-empty correction."""
    verdict: Verdict | None = None
    """The latest thumbs / rating verdict."""
    tools: Any = None
    """The tool definitions the request was served with, as logged (None: no tools)."""
    tool_choice: Any = None
    """The request's tool_choice, as logged."""
    response_calls: Any = None
    """The served answer's tool calls, as logged (None: a text answer)."""
    correction_calls: list[dict[str, Any]] | None = None
    """The tool calls the correction states (None: a correction in words, or none)."""

    @property
    def corrected(self) -> bool:
        """A real correction (one equal to the served answer - its text, or its calls - is an acceptance)."""
        if not self.correction:
            return False
        if self.correction_calls is not None and self.response_calls:
            return not _same_calls(self.correction_calls, self.response_calls)
        return not _same(self.correction, self.response)

    @property
    def served(self) -> Answer:
        """The served answer: its text, or its tool calls (with the text a tool parser left beside them,
        tool_choice auto; a forced choice's text is the calls themselves)."""
        if not self.response_calls:
            return self.response
        return [served_calls_message(self.response, self.response_calls, self.tool_choice)]

    @property
    def corrected_answer(self) -> Answer | None:
        """The correction: its tool calls when it states some, else its text."""
        if self.correction_calls:
            return [{"role": "assistant", "content": "", "tool_calls": self.correction_calls}]
        return self.correction

    @property
    def good(self) -> bool:
        return not self.corrected and (self.verdict == "good" or bool(self.correction))

    @property
    def bad(self) -> bool:
        return self.corrected or (self.verdict == "bad" and not self.correction)

    @property
    def better_answer(self) -> Answer | None:
        """A good answer to this answer's prompt: its correction, or the served answer when accepted."""
        if self.corrected:
            return self.corrected_answer
        return self.served if self.good else None

    def tool_columns(self) -> dict[str, Any]:
        """`tools` and `tool_choice` for a record of this answer (none without tools)."""
        return {"tools": self.tools, "tool_choice": self.tool_choice} if self.tools is not None else {}


def prompt_key(prompt: list[dict[str, Any]] | str, tools: Any = None) -> str:
    """Answers to the same prompt (same messages, whitespace-insensitive, and the same tools) share this
    key."""
    if isinstance(prompt, str):
        key = " ".join(prompt.split())
    else:
        turns = [(str(m.get("role")), " ".join(str(m.get("content", "")).split())) for m in prompt]
        key = json.dumps(turns, ensure_ascii=False)
    if tools is None:
        return key
    return f"{key}\ntools: {json.dumps(tools, ensure_ascii=False, sort_keys=True)}"


def preference_rows(
    answers: Iterable[FeedbackAnswer], *, include_accepted: bool = True
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """DPO pairs (rows for the `preference` template) and counts of what became of the answers (`pairs_*`,
    `unpaired_rejected`, `unpaired_accepted`). `answers` come newest first; the newest good answer of a
    prompt is the chosen answer for its uncorrected rejections."""
    answers = list(answers)
    better: dict[str, tuple[Answer, str]] = {}  # prompt key -> (newest good answer, its request id)
    for answer in answers:
        good = answer.better_answer
        if good is not None and (answer.corrected or include_accepted):
            better.setdefault(prompt_key(answer.prompt, answer.tools), (good, answer.request_id))
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for answer in answers:
        base = {
            "request_id": answer.request_id,
            "prompt": answer.prompt,
            "rejected": answer.served,
            **answer.tool_columns(),
        }
        if answer.corrected:
            rows.append({**base, "origin": "correction", "chosen": answer.corrected_answer})
            counts["pairs_correction"] += 1
        elif answer.bad:
            match = better.get(prompt_key(answer.prompt, answer.tools))
            if match is None:
                counts["unpaired_rejected"] += 1
                continue
            rows.append({**base, "origin": "same_prompt", "chosen": match[0], "chosen_request_id": match[1]})
            counts["pairs_same_prompt"] += 1
        elif answer.good:
            counts["unpaired_accepted"] += 1
    return rows, counts


def kto_rows(
    answers: Iterable[FeedbackAnswer], *, include_accepted: bool = True
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """KTO records (rows for the `kto` template) and their counts (`desirable`, `undesirable`)."""
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()

    def add(answer: FeedbackAnswer, completion: Answer | None, label: bool, origin: str) -> None:
        rows.append(
            {
                "request_id": answer.request_id,
                "origin": origin,
                "prompt": answer.prompt,
                "completion": completion or "",
                "label": label,
                **answer.tool_columns(),
            }
        )
        counts["desirable" if label else "undesirable"] += 1

    for answer in answers:
        if answer.corrected:
            add(answer, answer.corrected_answer, True, "correction")
            add(answer, answer.served, False, "corrected_answer")
        elif answer.bad:
            add(answer, answer.served, False, "rejected")
        elif answer.good and include_accepted:
            add(answer, answer.served, True, "accepted")
    return rows, counts
