"""Scorers of logged requests (registered by name) and batch scoring into the `scores` table.

Importing this package registers the built-in kinds: feedback, reference, empty, refusal, repetition,
truncation, language_mismatch, length_outlier, llm_judge. They live in the registry `SCORERS`; add a kind
with `@register_scorer("name")`.
"""

from monitoring.scorers import feedback, heuristics, judge, language, reference  # noqa: F401  (registers kinds)
from monitoring.scorers.base import (
    SCORERS,
    Scorer,
    ScoreResult,
    ScorerItem,
    ScorerSpec,
    build_scorer,
    build_scorers,
    get_scorer_class,
    register_scorer,
    scorer_kinds,
)
from monitoring.scorers.batch import (
    DEFAULT_SCORERS,
    DEFAULT_SLICE_KEYS,
    ScoreAggregate,
    ScoreSummary,
    ScoringFailure,
    aggregate_scores,
    parse_version_key,
    score_batch,
    version_key,
)
from monitoring.scorers.feedback import FeedbackScorer
from monitoring.scorers.heuristics import (
    EmptyScorer,
    LengthOutlierScorer,
    RefusalScorer,
    RepetitionScorer,
    TruncationScorer,
)
from monitoring.scorers.judge import LlmJudgeScorer
from monitoring.scorers.language import LanguageMismatchScorer, detect_language
from monitoring.scorers.reference import ReferenceScorer

__all__ = [
    "DEFAULT_SCORERS",
    "DEFAULT_SLICE_KEYS",
    "SCORERS",
    "EmptyScorer",
    "FeedbackScorer",
    "LanguageMismatchScorer",
    "LengthOutlierScorer",
    "LlmJudgeScorer",
    "ReferenceScorer",
    "RefusalScorer",
    "RepetitionScorer",
    "ScoreAggregate",
    "ScoreResult",
    "ScoreSummary",
    "Scorer",
    "ScorerItem",
    "ScorerSpec",
    "ScoringFailure",
    "TruncationScorer",
    "aggregate_scores",
    "build_scorer",
    "build_scorers",
    "detect_language",
    "get_scorer_class",
    "parse_version_key",
    "register_scorer",
    "score_batch",
    "scorer_kinds",
    "version_key",
]
