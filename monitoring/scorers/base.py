"""The scorer interface, score results, and the registry of scorer kinds by name (`SCORERS`, a
`common.plugins.PluginRegistry`).

A scorer looks at one logged request (and its feedback rows) and returns a quality score in 0..1
(1 = good), `None` when it does not apply (no feedback yet, no reference known, not sampled), or raises
`ScorerError` when it failed (the request stays unscored and is retried by the next batch).
Kinds register with `@register_scorer("kind")`; `build_scorer` builds one from a name or a config mapping
(`{"kind": "llm_judge", "name": "judge_v2", "sample_rate": 0.1, ...}`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar

from common.plugins import PluginRegistry
from monitoring.errors import ScorerConfigError, ScorerError
from monitoring.store import FeedbackEntry, LoggedRequest

__all__ = [
    "SCORERS",
    "ScoreResult",
    "Scorer",
    "ScorerItem",
    "ScorerSpec",
    "build_scorer",
    "build_scorers",
    "get_scorer_class",
    "register_scorer",
    "scorer_kinds",
]

MAX_SCORER_NAME = 64  # width of scores.scorer


@dataclass(frozen=True)
class ScoreResult:
    """A score in 0..1 (1 = good) with what it was computed from."""

    score: float
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score!r} is outside 0..1")


ScorerItem = tuple[LoggedRequest, Sequence[FeedbackEntry]]
"""What a scorer sees for one request: the request row and its feedback rows (oldest first)."""

ScorerSpec: TypeAlias = "str | Scorer | Mapping[str, Any]"
"""How a scorer is named in config: a kind, a mapping with `kind` and options, or a built instance."""


class Scorer(ABC):
    """A scorer kind. Subclasses set `kind` and implement `score` (or `score_many` for batched I/O)."""

    kind: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or self.kind
        if not self.name or len(self.name) > MAX_SCORER_NAME:
            raise ScorerConfigError(f"scorer name {self.name!r} must be 1..{MAX_SCORER_NAME} characters")

    @abstractmethod
    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        """Score one request; `None` when the scorer does not apply to it."""

    def score_many(self, items: Sequence[ScorerItem]) -> list[ScoreResult | None | ScorerError]:
        """Score a batch; a failure of one item is returned in its place, not raised."""
        out: list[ScoreResult | None | ScorerError] = []
        for request, feedback in items:
            try:
                out.append(self.score(request, feedback))
            except ScorerError as exc:
                out.append(exc)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


SCORERS: PluginRegistry[Scorer] = PluginRegistry("scorer kind", error=ScorerConfigError)
"""Every scorer kind by name (`@SCORERS.register("kind")`, or `register_scorer`)."""

S = TypeVar("S", bound=type[Scorer])


def register_scorer(kind: str) -> Callable[[S], S]:
    """Class decorator: register a scorer kind under `kind`."""
    return SCORERS.register(kind)


def scorer_kinds() -> list[str]:
    """Names of every registered scorer kind."""
    return SCORERS.kinds()


def get_scorer_class(kind: str) -> type[Scorer]:
    """The class registered under `kind`."""
    return SCORERS.get(kind)


def build_scorer(spec: ScorerSpec) -> Scorer:
    """A scorer from a kind name, a config mapping (`kind` + options, checked against the constructor),
    or an instance (returned as is)."""
    if isinstance(spec, Scorer):
        return spec
    if isinstance(spec, str):
        return SCORERS.build(spec)
    if not isinstance(spec, Mapping):
        raise ScorerConfigError(
            f"a scorer spec must be a name, a mapping or a Scorer, got {type(spec).__name__}"
        )
    options = dict(spec)
    kind = options.pop("kind", None)
    if not isinstance(kind, str):
        raise ScorerConfigError(
            f"scorer config {dict(spec)!r} needs a 'kind' (one of {', '.join(scorer_kinds())})"
        )
    return SCORERS.build(kind, options)


def build_scorers(specs: Sequence[ScorerSpec]) -> list[Scorer]:
    """Build several scorers; their names (the `scores.scorer` values) must be unique."""
    scorers = [build_scorer(s) for s in specs]
    seen: set[str] = set()
    for scorer in scorers:
        if scorer.name in seen:
            raise ScorerConfigError(f"two scorers are named {scorer.name!r}: give one a different name=")
        seen.add(scorer.name)
    return scorers
