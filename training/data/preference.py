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

__all__ = ["FeedbackAnswer", "Verdict", "kto_rows", "preference_rows", "prompt_key", "verdict"]

Verdict = Literal["good", "bad"]


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

    @property
    def corrected(self) -> bool:
        """A real correction (one equal to the served answer is an acceptance)."""
        return bool(self.correction) and not _same(self.correction or "", self.response)

    @property
    def good(self) -> bool:
        return not self.corrected and (self.verdict == "good" or bool(self.correction))

    @property
    def bad(self) -> bool:
        return self.corrected or (self.verdict == "bad" and not self.correction)

    @property
    def better_answer(self) -> str | None:
        """A good answer to this answer's prompt: its correction, or the served answer when accepted."""
        if self.corrected:
            return self.correction
        return self.response if self.good else None


def prompt_key(prompt: list[dict[str, Any]] | str) -> str:
    """Answers to the same prompt (same messages, whitespace-insensitive) share this key."""
    if isinstance(prompt, str):
        return " ".join(prompt.split())
    turns = [(str(m.get("role")), " ".join(str(m.get("content", "")).split())) for m in prompt]
    return json.dumps(turns, ensure_ascii=False)


def preference_rows(
    answers: Iterable[FeedbackAnswer], *, include_accepted: bool = True
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """DPO pairs (rows for the `preference` template) and counts of what became of the answers (`pairs_*`,
    `unpaired_rejected`, `unpaired_accepted`). `answers` come newest first; the newest good answer of a
    prompt is the chosen answer for its uncorrected rejections."""
    answers = list(answers)
    better: dict[str, tuple[str, str]] = {}  # prompt key -> (newest good answer, its request id)
    for answer in answers:
        good = answer.better_answer
        if good is not None and (answer.corrected or include_accepted):
            better.setdefault(prompt_key(answer.prompt), (good, answer.request_id))
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for answer in answers:
        base = {"request_id": answer.request_id, "prompt": answer.prompt, "rejected": answer.response}
        if answer.corrected:
            rows.append({**base, "origin": "correction", "chosen": answer.correction})
            counts["pairs_correction"] += 1
        elif answer.bad:
            match = better.get(prompt_key(answer.prompt))
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

    def add(answer: FeedbackAnswer, completion: str, label: bool, origin: str) -> None:
        rows.append(
            {
                "request_id": answer.request_id,
                "origin": origin,
                "prompt": answer.prompt,
                "completion": completion,
                "label": label,
            }
        )
        counts["desirable" if label else "undesirable"] += 1

    for answer in answers:
        if answer.corrected:
            add(answer, answer.correction or "", True, "correction")
            add(answer, answer.response, False, "corrected_answer")
        elif answer.bad:
            add(answer, answer.response, False, "rejected")
        elif answer.good and include_accepted:
            add(answer, answer.response, True, "accepted")
    return rows, counts
