"""Heuristic scorers that need no reference: empty, refusal, repetition, truncation, length outliers.

Each is its own registered kind (so each has its own rate per served version), and each returns 1.0 for
a good answer and 0.0 for a flagged one, with the measured value in the details.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from monitoring.scorers.base import Scorer, ScoreResult, register_scorer
from monitoring.scorers.text import repeated_ngram_fraction, tokens
from monitoring.store import FeedbackEntry, LoggedRequest

__all__ = [
    "EmptyScorer",
    "LengthOutlierScorer",
    "RefusalScorer",
    "RepetitionScorer",
    "TruncationScorer",
    "DEFAULT_REFUSAL_PATTERNS",
]


@register_scorer("empty")
class EmptyScorer(Scorer):
    """0 when the answer is missing or only whitespace."""

    description = "empty answer"

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        text = (request.response or "").strip()
        return ScoreResult(1.0 if text else 0.0, {"chars": len(text)})


DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:no|')t|am unable|won't|will not)\b",
    r"\bI (?:can(?:no|')t|am unable to|won't|will not) (?:help|assist|provide|comply|do that|answer)\b",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply|answer)\b",
    r"\bas an AI(?: language model)?\b",
    r"\bI (?:must|have to) (?:decline|refuse)\b",
    r"\b(?:that|this) (?:request )?(?:goes against|violates) (?:my|our) (?:guidelines|policy|policies)\b",
)


@register_scorer("refusal")
class RefusalScorer(Scorer):
    """0 when the start of the answer matches a refusal phrase ("I'm sorry, but I can't ...")."""

    description = "the model refused"

    def __init__(
        self,
        *,
        name: str | None = None,
        patterns: Sequence[str] = DEFAULT_REFUSAL_PATTERNS,
        window: int = 400,
    ) -> None:
        super().__init__(name=name)
        if not patterns:
            raise ValueError("patterns must not be empty")
        self.patterns = [re.compile(p, re.IGNORECASE) for p in patterns]
        self.window = window

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        head = (request.response or "")[: self.window]
        if not head.strip():
            return None  # empty answers are the `empty` scorer's business
        for pattern in self.patterns:
            match = pattern.search(head)
            if match:
                return ScoreResult(0.0, {"match": match.group(0)})
        return ScoreResult(1.0, None)


@register_scorer("repetition")
class RepetitionScorer(Scorer):
    """0 when the answer loops: most of its word n-grams repeat, or one line recurs many times."""

    description = "degenerate repetition"

    def __init__(
        self,
        *,
        name: str | None = None,
        n: int = 3,
        max_repeated_fraction: float = 0.5,
        max_line_repeats: int = 3,
        min_words: int = 12,
    ) -> None:
        super().__init__(name=name)
        if not 0.0 < max_repeated_fraction < 1.0:
            raise ValueError("max_repeated_fraction must be in (0, 1)")
        self.n = n
        self.max_repeated_fraction = max_repeated_fraction
        self.max_line_repeats = max_line_repeats
        self.min_words = min_words

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        text = request.response or ""
        words = tokens(text)
        if len(words) < self.min_words:
            return None
        fraction = repeated_ngram_fraction(words, self.n)
        lines = [line.strip().lower() for line in text.splitlines() if len(line.strip()) >= 10]
        line_repeats = max((lines.count(line) for line in set(lines)), default=0)
        looping = fraction >= self.max_repeated_fraction or line_repeats >= self.max_line_repeats
        return ScoreResult(
            0.0 if looping else 1.0,
            {"repeated_ngram_fraction": round(fraction, 4), "max_line_repeats": line_repeats},
        )


@register_scorer("truncation")
class TruncationScorer(Scorer):
    """0 when generation stopped at the token limit (`finish_reason == "length"`)."""

    description = "answer cut off at max_tokens"

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        if request.finish_reason is None:
            return None
        truncated = request.finish_reason == "length"
        return ScoreResult(0.0 if truncated else 1.0, {"finish_reason": request.finish_reason})


@register_scorer("length_outlier")
class LengthOutlierScorer(Scorer):
    """0 when the answer's length is an outlier against a running window of recent answer lengths.

    Lengths are compared as log(1 + characters) with a robust z-score (median and MAD of the last
    `window` answers, per `group_by` value). Until `min_history` answers were seen the scorer does not
    apply (those requests are retried by a later batch). Keep one instance across batches (the loop does)
    or `warm_start` it, so the window persists.
    """

    description = "answer length far from the usual"

    def __init__(
        self,
        *,
        name: str | None = None,
        window: int = 1000,
        min_history: int = 50,
        max_z: float = 3.5,
        min_scale: float = 0.1,
        group_by: str = "served_name",
    ) -> None:
        super().__init__(name=name)
        if group_by not in ("served_name", "version", "endpoint", "all"):
            raise ValueError("group_by must be one of served_name, version, endpoint, all")
        if min_history < 5 or window < min_history:
            raise ValueError("need 5 <= min_history <= window")
        self.window = window
        self.min_history = min_history
        self.max_z = max_z
        self.min_scale = min_scale
        self.group_by = group_by
        self._history: dict[str, deque[float]] = {}
        self._seen: dict[str, deque[str]] = {}
        self._seen_set: dict[str, set[str]] = {}
        self._warm_ids = 0

    def _group(self, request: LoggedRequest) -> str:
        if self.group_by == "served_name":
            return request.served_name
        if self.group_by == "version":
            return request.version_key
        if self.group_by == "endpoint":
            return request.endpoint
        return "all"

    def _remember(self, group: str, request_id: str, value: float) -> None:
        seen = self._seen_set.setdefault(group, set())
        if request_id in seen:
            return
        history = self._history.setdefault(group, deque(maxlen=self.window))
        order = self._seen.setdefault(group, deque())
        if len(history) == self.window and order:
            seen.discard(order.popleft())
        history.append(value)
        order.append(request_id)
        seen.add(request_id)

    def warm_start(self, lengths: Iterable[int], *, group: str | None = None) -> None:
        """Seed a group's window with answer lengths (characters), e.g. from recent scored traffic.

        `group` is the `group_by` value the lengths belong to (a served name, a version key, an
        endpoint); it may be left out only when `group_by="all"`.
        """
        if group is None:
            if self.group_by != "all":
                raise ValueError(
                    f"warm_start needs group= (a {self.group_by} value) when group_by={self.group_by!r}"
                )
            group = "all"
        for length in lengths:
            self._warm_ids += 1
            self._remember(group, f"warm-start-{self._warm_ids}", math.log1p(max(0, length)))

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        text = request.response or ""
        if not text.strip():
            return None
        value = math.log1p(len(text))
        group = self._group(request)
        history = self._history.get(group)
        result: ScoreResult | None = None
        if history is not None and len(history) >= self.min_history:
            values = np.fromiter(history, dtype=float)
            median = float(np.median(values))
            scale = max(1.4826 * float(np.median(np.abs(values - median))), self.min_scale)
            z = (value - median) / scale
            outlier = abs(z) > self.max_z
            result = ScoreResult(
                0.0 if outlier else 1.0,
                {
                    "chars": len(text),
                    "robust_z": round(z, 3),
                    "median_chars": round(math.expm1(median), 1),
                    "history": len(values),
                },
            )
        self._remember(group, request.id, value)
        return result
