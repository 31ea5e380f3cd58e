"""The metric interface, the registry of metric kinds by name (`METRICS`, a `common.plugins.PluginRegistry`),
and loading the shipped `evaluate` modules.

Every metric reports, per example, a row of *additive sufficient statistics* and says how to turn a sum
of rows into its score (`statistic`). For a mean-type metric the row is `[score, 1]` and the statistic
is a ratio; corpus BLEU/chrF keep n-gram counts; macro-F1 keeps per-class tp/fp/fn. One representation
gives exact corpus scores, per-slice scores, and paired bootstrap resamples (sum the rows a resample
picks, apply the statistic) for every metric alike. A row of zeros means "not scorable" and drops out.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from common.plugins import PluginRegistry
from evals.errors import MetricError
from evals.example import Example

if TYPE_CHECKING:
    import evaluate

MODULES_DIR = Path(__file__).parent / "modules"


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where an LLM-as-judge metric may send its requests."""

    base_url: str
    model: str | None
    api_key: str | None = None
    concurrency: int = 4
    timeout_s: float = 60.0


@dataclass(frozen=True)
class MetricInput:
    """Everything a metric may look at for a batch of examples."""

    predictions: Sequence[str]
    """Extracted answers (task-specific extraction already applied)."""
    examples: Sequence[Example]
    prompts: Sequence[str]
    """The user turn each example was asked (judges show it to the grader)."""
    labels: Sequence[str] | None = None
    judge: JudgeEndpoint | None = None


@dataclass
class MetricScores:
    """A metric's result on a batch: per-example display scores, sufficient statistics, the aggregate."""

    per_example: list[float | None]
    stats: np.ndarray
    value: float
    details: list[dict[str, Any]] = field(default_factory=list)


class Metric(ABC):
    """A metric kind. Subclasses set `kind`, `module`, and implement `_score`."""

    kind: ClassVar[str]
    module: ClassVar[str]
    """Folder name under evals/metrics/modules holding the `evaluate` module that computes it."""
    higher_is_better: ClassVar[bool] = True
    allowed_args: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""

    def __init__(self, name: str, args: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.args = dict(args or {})
        self.validate_args(name, self.args)

    @classmethod
    def validate_args(cls, name: str, args: Mapping[str, Any]) -> None:
        unknown = sorted(set(args) - cls.allowed_args)
        if unknown:
            allowed = ", ".join(sorted(cls.allowed_args)) or "none"
            raise MetricError(
                f"metric {name!r} ({cls.kind}): unknown argument {unknown[0]!r} (allowed: {allowed})"
            )

    async def score(self, inputs: MetricInput) -> MetricScores:
        """Score a batch. Runs the synchronous `_score` in a worker thread by default."""
        import asyncio

        return await asyncio.to_thread(self._score_locked, inputs)

    def _score_locked(self, inputs: MetricInput) -> MetricScores:
        with module_lock(self.module):
            return self._score(inputs)

    def _score(self, inputs: MetricInput) -> MetricScores:  # pragma: no cover - async metrics override score
        raise NotImplementedError

    @classmethod
    def statistic(cls, summed: np.ndarray) -> np.ndarray:
        """Score(s) from summed statistics: `summed` is (k,) or (B, k); returns () or (B,)."""
        return ratio_statistic(summed)

    @classmethod
    def value_of(cls, stats: np.ndarray) -> float:
        """The aggregate score of a set of per-example rows."""
        if len(stats) == 0:
            return float("nan")
        return float(cls.statistic(np.asarray(stats, dtype=float).sum(axis=0)))


def ratio_statistic(summed: np.ndarray) -> np.ndarray:
    """Mean-type metrics: sum of scores / number of scored examples (NaN when none)."""
    summed = np.asarray(summed, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.where(
            summed[..., 1] > 0, summed[..., 0] / np.where(summed[..., 1] > 0, summed[..., 1], 1), np.nan
        )
    return out


def mean_rows(scores: Sequence[float | None]) -> np.ndarray:
    """Sufficient statistics `[score, 1]` per example (`[0, 0]` where the score is missing)."""
    return np.array([[0.0, 0.0] if s is None else [float(s), 1.0] for s in scores], dtype=float).reshape(
        -1, 2
    )


METRICS: PluginRegistry[Metric] = PluginRegistry("metric", error=MetricError)
"""Every metric kind by name (`@METRICS.register("kind")`, or `register_metric`)."""


def register_metric(kind: str) -> Callable[[type[Metric]], type[Metric]]:
    """Class decorator registering a metric kind under `kind` (a taken kind is a `ValueError`)."""
    return METRICS.register(kind)


def get_metric_class(kind: str) -> type[Metric]:
    """The metric class registered as `kind`; the error names a close match and the known kinds."""
    return METRICS.get(kind)


def metric_kinds() -> list[str]:
    """Every registered metric kind."""
    return METRICS.kinds()


def build_metric(name: str, kind: str | None = None, args: Mapping[str, Any] | None = None) -> Metric:
    """Instantiate a metric called `name` of registered kind `kind` (default: `name`); `args` are checked
    against the kind's `allowed_args`."""
    return METRICS.get(kind or name)(name, args)


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def module_lock(module: str) -> threading.Lock:
    # An `evaluate` module object keeps per-call state: one computation at a time per module.
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(module, threading.Lock())


@functools.cache
def load_module(name: str) -> evaluate.EvaluationModule:
    """Load the shipped `evaluate` module `name` from evals/metrics/modules/<name>/<name>.py (offline)."""
    folder = MODULES_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise MetricError(f"metric module {name!r} is missing: expected {folder / (name + '.py')}")
    import evaluate

    try:
        return evaluate.load(str(folder), keep_in_memory=True)
    except Exception as exc:  # evaluate wraps import problems in several exception types
        raise MetricError(f"cannot load metric module {folder}: {exc}") from exc


def compute_module(name: str, **kwargs: Any) -> dict[str, Any]:
    """Run the shipped `evaluate` module `name` on predictions/references (+ module options)."""
    module = load_module(name)
    if not kwargs.get("predictions"):
        raise MetricError(f"metric module {name!r}: nothing to score")
    result = module.compute(**kwargs)
    if result is None:  # evaluate returns None on non-main processes only
        raise MetricError(f"metric module {name!r} returned no result")
    return dict(result)
