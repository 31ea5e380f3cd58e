"""Paired comparison of two runs of the same suite: every metric, overall and per slice.

Both the gate (as evidence beyond its decision metric) and the reports use this: for each metric and each
slice, the examples both runs scored are paired and the delta gets a paired bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evals.errors import RunDataError
from evals.metrics import get_metric_class
from evals.results import RunResult
from evals.stats.bootstrap import paired_bootstrap


@dataclass
class MetricDelta:
    """Candidate minus baseline on one metric and scope (a slice, or "__all__")."""

    suite: str
    metric: str
    scope: str
    baseline_value: float
    candidate_value: float
    delta: float
    low: float
    high: float
    n_pairs: int
    prob_improvement: float
    higher_is_better: bool


def paired_deltas(
    baseline: RunResult,
    candidate: RunResult,
    *,
    metrics: Sequence[str] | None = None,
    per_slice: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[MetricDelta]:
    """Deltas for `metrics` (default: all the candidate's) overall and, with `per_slice`, for every slice."""
    if baseline.suite != candidate.suite:
        raise RunDataError(
            f"cannot pair runs of different suites ({baseline.suite!r} vs {candidate.suite!r})"
        )
    out: list[MetricDelta] = []
    scopes: list[str | None] = [
        None,
        *(sorted(set(baseline.slices()) | set(candidate.slices())) if per_slice else []),
    ]
    for metric in metrics or list(candidate.metric_kinds):
        if metric not in baseline.metric_kinds:
            continue
        statistic = get_metric_class(candidate.metric_kinds[metric]).statistic
        higher = candidate.higher_is_better.get(metric, True)
        for scope in scopes:
            base_ids = set(baseline.scored_ids(metric, scope))
            ids = [i for i in candidate.scored_ids(metric, scope) if i in base_ids]
            if not ids:
                continue
            delta = paired_bootstrap(
                baseline.metric_rows(metric, ids),
                candidate.metric_rows(metric, ids),
                statistic,
                higher_is_better=higher,
                confidence=confidence,
                n_resamples=n_resamples,
                seed=seed,
            )
            out.append(
                MetricDelta(
                    suite=candidate.suite,
                    metric=metric,
                    scope=scope or RunResult.ALL,
                    baseline_value=delta.baseline,
                    candidate_value=delta.candidate,
                    delta=delta.delta,
                    low=delta.low,
                    high=delta.high,
                    n_pairs=delta.n,
                    prob_improvement=delta.prob_improvement,
                    higher_is_better=higher,
                )
            )
    return out
