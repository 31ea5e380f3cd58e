"""Reference-based scorer: token F1, contains-answer or exact match against an expected answer.

The reference comes from the request's tags (`reference`, or the keys given in `tag_keys`; a list of
acceptable answers is allowed, plus `aliases`; tags sent with feedback count too), from a
`lookup(request)` callable (e.g. a dict from prompt to policy answer), or — when the right answer is known
only afterwards — from the request's latest feedback correction. Not applicable when no reference is known.
`exact_match` compares normalised texts (case, punctuation, spacing): the metric for labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from evals.metrics.answers import contains_answer, normalise_answer
from monitoring.scorers.base import Scorer, ScoreResult, register_scorer
from monitoring.scorers.text import token_f1
from monitoring.store import FeedbackEntry, LoggedRequest

__all__ = ["METRICS", "ReferenceLookup", "ReferenceScorer"]

METRICS = ("token_f1", "contains_answer", "exact_match")

ReferenceLookup = Callable[[LoggedRequest], "str | Sequence[str] | None"]
"""Returns the expected answer(s) for a request, or None when unknown."""


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


@register_scorer("reference")
class ReferenceScorer(Scorer):
    """Best token F1 (or contains-answer) of the response against the known reference answers."""

    description = "overlap with a known expected answer"

    def __init__(
        self,
        *,
        name: str | None = None,
        metric: Literal["token_f1", "contains_answer", "exact_match"] = "token_f1",
        tag_keys: Sequence[str] = ("reference", "expected_answer"),
        lookup: ReferenceLookup | None = None,
    ) -> None:
        super().__init__(name=name)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
        self.metric = metric
        self.tag_keys = tuple(tag_keys)
        self.lookup = lookup

    def references(
        self, request: LoggedRequest, feedback: Sequence[FeedbackEntry] = ()
    ) -> tuple[list[str], str]:
        """The acceptable answers for a request and where they came from ('tags', 'lookup', 'feedback' or
        '')."""
        for key in self.tag_keys:
            refs = _as_list(request.tags.get(key))
            if refs:
                return refs + _as_list(request.tags.get("aliases")), "tags"
        if self.lookup is not None:
            refs = _as_list(self.lookup(request))
            if refs:
                return refs, "lookup"
        corrections = [f.correction for f in feedback if f.correction and f.correction.strip()]
        if corrections:
            return [corrections[-1]], "feedback"
        return [], ""

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        refs, source = self.references(request, feedback)
        if not refs:
            return None
        answer = request.response or ""
        f1 = max(token_f1(answer, ref) for ref in refs) if answer.strip() else 0.0
        contains = contains_answer(answer, refs)
        exact = float(any(normalise_answer(answer) == normalise_answer(ref) for ref in refs))
        value = {"token_f1": f1, "contains_answer": contains, "exact_match": exact}[self.metric]
        return ScoreResult(
            value,
            {
                "metric": self.metric,
                "token_f1": f1,
                "contains_answer": contains,
                "exact_match": exact,
                "source": source,
            },
        )
