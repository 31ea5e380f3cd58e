"""Explicit-feedback scorer: a user's rating, thumbs or correction turned into a score in 0..1.

Per feedback row: `rating` (already 0..1) wins; else `thumbs` (+1 -> 1.0, -1 -> 0.0); else a
`correction` alone means the answer needed fixing (0.0). Several rows for one request are averaged.
The latest correction is kept in the details (the dataset builder reads corrections with
`monitoring.store.load_corrections`). A request is scored once, when its first feedback is seen.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitoring.scorers.base import Scorer, ScoreResult, register_scorer
from monitoring.store import FeedbackEntry, LoggedRequest

__all__ = ["FeedbackScorer", "feedback_value"]


def feedback_value(entry: FeedbackEntry) -> float | None:
    """The score one feedback row expresses, or None when it carries none."""
    if entry.rating is not None:
        return min(1.0, max(0.0, float(entry.rating)))
    if entry.thumbs is not None and entry.thumbs != 0:
        return 1.0 if entry.thumbs > 0 else 0.0
    if entry.correction is not None and entry.correction.strip():
        return 0.0
    return None


@register_scorer("feedback")
class FeedbackScorer(Scorer):
    """Mean of the scores the request's feedback rows express; not applicable without feedback."""

    description = "explicit user feedback: rating, thumbs, correction"

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        values = [(entry, feedback_value(entry)) for entry in feedback]
        used = [(entry, v) for entry, v in values if v is not None]
        if not used:
            return None
        corrections = [e.correction for e in feedback if e.correction and e.correction.strip()]
        details: dict[str, object] = {
            "n_feedback": len(used),
            "feedback_ids": [e.id for e, _ in used],
            "kinds": sorted(
                {
                    "rating" if e.rating is not None else "thumbs" if e.thumbs else "correction"
                    for e, _ in used
                }
            ),
        }
        if corrections:
            details["correction"] = corrections[-1]
        sources = sorted({e.source for e, _ in used if e.source})
        if sources:
            details["sources"] = sources
        return ScoreResult(sum(v for _, v in used) / len(used), details)
