"""Drift reports (typed, JSON-serialisable) and the registry of drift detectors by name (`DETECTORS`, a
`common.plugins.PluginRegistry`).

Two kinds of detector share one registry:

* `InputDriftDetector.test(ref, live, seed=...)` compares a reference window of prompt embeddings with a
  live window (two-sample test);
* `QualityDriftDetector.test(scores, reference=...)` watches one score stream (per served version and
  scorer) for a drop.

Both return a `DriftReport`. Register a kind with `@register_detector("name")`; build one by name with
`build_detector("mmd", permutations=300)`.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from common.plugins import PluginRegistry
from monitoring.errors import DriftInputError

__all__ = [
    "DETECTORS",
    "ClusterShift",
    "DriftDetector",
    "DriftKind",
    "DriftReport",
    "InputDriftDetector",
    "QualityDriftDetector",
    "SampledWindows",
    "ScoreStream",
    "build_detector",
    "detector_names",
    "get_detector_class",
    "register_detector",
]

DriftKind = Literal["input", "quality"]
ScoreStream = Sequence[float] | np.ndarray
"""Scores in 0..1, oldest first: a list or a 1-D array."""


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, non-finite floats as None, datetimes ISO."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass
class ClusterShift:
    """One topic cluster of the pooled prompts: its share in the reference and live windows."""

    cluster: int
    ref_share: float
    live_share: float
    delta: float
    """live_share - ref_share (positive: the topic grew)."""
    n_ref: int
    n_live: int
    p_value: float
    """Two-proportion z-test of the shares (two-sided)."""
    examples: list[str] = field(default_factory=list)
    """Prompts closest to the cluster centre (live ones first)."""
    terms: list[str] = field(default_factory=list)
    """Words most typical of the cluster compared with all prompts."""

    @property
    def grew(self) -> bool:
        return self.delta > 0


@dataclass
class DriftReport:
    """The outcome of one drift check."""

    detector: str
    kind: DriftKind
    statistic: float
    """MMD^2, AUC, or the drop in mean score, depending on the detector."""
    threshold: float
    """The statistic's critical value at the detector's level (or the minimum drop for quality)."""
    p_value: float | None
    n_ref: int
    n_live: int
    drifted: bool
    subject: str = ""
    """What was checked, e.g. `support-bot@<version>` or `support-bot@<version>:reference`."""
    clusters: list[ClusterShift] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def top_growing(self, n: int = 3, *, max_p_value: float = 0.05) -> list[ClusterShift]:
        """The clusters that grew most (significantly), largest growth first."""
        grown = [c for c in self.clusters if c.delta > 0 and c.p_value <= max_p_value]
        return sorted(grown, key=lambda c: c.delta, reverse=True)[:n]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN/inf as null, datetimes ISO 8601)."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        """Inverse of `to_dict` (null statistics come back as NaN)."""
        values = dict(data)
        values["clusters"] = [ClusterShift(**c) for c in values.get("clusters", [])]
        for key in ("statistic", "threshold"):
            values[key] = float("nan") if values.get(key) is None else float(values[key])
        created = values.get("created_at")
        if isinstance(created, str):
            values["created_at"] = datetime.fromisoformat(created)
        return cls(**values)

    def summary(self) -> str:
        """One human line: detector, verdict, statistic vs threshold, p-value, sizes."""
        p = "n/a" if self.p_value is None else f"{self.p_value:.4f}"
        verdict = "DRIFT" if self.drifted else "no drift"
        head = f"{self.detector}[{self.subject}]" if self.subject else self.detector
        return (
            f"{head}: {verdict} (statistic {self.statistic:.4g} vs threshold {self.threshold:.4g}, "
            f"p={p}, n_ref={self.n_ref}, n_live={self.n_live})"
        )


class DriftDetector(ABC):
    """Base of every registered detector."""

    name: ClassVar[str]
    kind: ClassVar[DriftKind]


@dataclass(frozen=True)
class SampledWindows:
    """Both windows of a two-sample test as tested (each cut to at most `max_per_window` random rows) and
    how many rows each had before the cut."""

    ref: np.ndarray
    live: np.ndarray
    n_ref: int
    n_live: int


class InputDriftDetector(DriftDetector):
    """A two-sample test on embeddings: does the live window come from the reference distribution?

    Subclasses set `alpha` (the test's level) and `max_per_window` (rows tested per window at most); the
    shared steps are `sample_windows` (validate, subsample) and `report` (the verdict at `alpha`)."""

    kind: ClassVar[DriftKind] = "input"
    min_samples: int = 10
    alpha: float
    max_per_window: int

    @abstractmethod
    def test(self, ref: np.ndarray, live: np.ndarray, *, seed: int = 0) -> DriftReport:
        """Test `live` (m, d) against `ref` (n, d)."""

    def validate(self, ref: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both windows as float64 2-D arrays of the same width with enough finite rows."""
        ref = np.asarray(ref, dtype=np.float64)
        live = np.asarray(live, dtype=np.float64)
        if ref.ndim != 2 or live.ndim != 2:
            raise DriftInputError(
                f"{self.name}: windows must be 2-D (n, d), got {ref.shape} and {live.shape}"
            )
        if ref.shape[1] != live.shape[1]:
            raise DriftInputError(
                f"{self.name}: dimension mismatch, reference {ref.shape[1]} vs live {live.shape[1]}"
            )
        for label, window in (("reference", ref), ("live", live)):
            if len(window) < self.min_samples:
                raise DriftInputError(
                    f"{self.name}: the {label} window has {len(window)} samples, "
                    f"need at least {self.min_samples}"
                )
            if not np.isfinite(window).all():
                raise DriftInputError(f"{self.name}: the {label} window contains NaN or inf")
        return ref, live

    def sample_windows(self, ref: np.ndarray, live: np.ndarray, *, seed: int) -> SampledWindows:
        """The `validate`d windows, each longer than `max_per_window` cut to that many random rows (drawn
        without replacement from a generator seeded with `seed`, reference first)."""
        ref, live = self.validate(ref, live)
        n_ref, n_live = len(ref), len(live)
        rng = np.random.default_rng(seed)
        if n_ref > self.max_per_window:
            ref = ref[rng.choice(n_ref, self.max_per_window, replace=False)]
        if n_live > self.max_per_window:
            live = live[rng.choice(n_live, self.max_per_window, replace=False)]
        return SampledWindows(ref, live, n_ref, n_live)

    def report(
        self,
        windows: SampledWindows,
        *,
        statistic: float,
        threshold: float,
        p_value: float,
        statistic_name: str,
        **evidence: Any,
    ) -> DriftReport:
        """The test's report: drifted when p <= `alpha`; the evidence names the statistic, adds `evidence`
        and the sizes tested (`subsampled_to`)."""
        return DriftReport(
            detector=self.name,
            kind=self.kind,
            statistic=statistic,
            threshold=threshold,
            p_value=p_value,
            n_ref=windows.n_ref,
            n_live=windows.n_live,
            drifted=p_value <= self.alpha,
            evidence={
                "alpha": self.alpha,
                "statistic_name": statistic_name,
                **evidence,
                "subsampled_to": [len(windows.ref), len(windows.live)],
            },
        )


class QualityDriftDetector(DriftDetector):
    """Change detection on a stream of scores in 0..1 (oldest first)."""

    kind: ClassVar[DriftKind] = "quality"

    @abstractmethod
    def test(self, scores: ScoreStream, *, reference: ScoreStream | None = None) -> DriftReport:
        """Look for a drop in `scores`; `reference` (e.g. the champion's baseline scores) is optional."""


DETECTORS: PluginRegistry[DriftDetector] = PluginRegistry(
    "drift detector", error=DriftInputError, kind_attr="name"
)
"""Every drift detector by name (the class's `name`; its `kind` says input or quality)."""

D = TypeVar("D", bound=type[DriftDetector])


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator: register a drift detector under `name`."""
    return DETECTORS.register(name)


def detector_names(kind: DriftKind | None = None) -> list[str]:
    """Registered detector names (of one kind, or all)."""
    return DETECTORS.kinds(where=None if kind is None else lambda cls: cls.kind == kind)


def get_detector_class(name: str) -> type[DriftDetector]:
    """The detector class registered under `name`."""
    return DETECTORS.get(name)


def build_detector(name: str, **options: Any) -> DriftDetector:
    """A detector by name with options; unknown options fail with the allowed ones named."""
    return DETECTORS.build(name, options)
