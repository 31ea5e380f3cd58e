"""Bootstrap confidence intervals over additive per-example statistics, single-run and paired.

A resample is a vector of counts (how often each example was drawn); the resampled statistic is the metric's
`statistic` applied to `counts @ rows`. Pairing: both runs' rows are indexed by the same examples and
summed with the same counts, so the CI of the difference reflects per-example pairing (the variance the
paired design removes never enters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int


@dataclass(frozen=True)
class PairedDelta:
    """Challenger minus champion on the same examples, with its bootstrap interval."""

    baseline: float
    candidate: float
    delta: float
    low: float
    high: float
    confidence: float
    n: int
    prob_improvement: float
    """Share of resamples in which the candidate is better (a bootstrap posterior-style summary)."""
    p_value_no_improvement: float
    """One-sided bootstrap p-value for H0: delta <= 0 (share of resamples with delta <= 0)."""


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) matrix of multinomial counts: each row is one bootstrap resample of n examples."""
    if n <= 0:
        return np.zeros((n_resamples, 0))
    draws = rng.integers(0, n, size=(n_resamples, n)) + np.arange(n_resamples)[:, None] * n
    return np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(float)


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_interval(
    rows: np.ndarray,
    statistic: Statistic,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of `statistic(sum of rows)`."""
    rows = np.asarray(rows, dtype=float)
    n = rows.shape[0]
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence, 0)
    estimate = float(statistic(rows.sum(axis=0)))
    counts = resample_counts(n, n_resamples, np.random.default_rng(seed))
    values = np.asarray(statistic(counts @ rows), dtype=float)
    low, high = _quantiles(values, confidence)
    return Interval(estimate, low, high, confidence, n)


def paired_bootstrap(
    baseline_rows: np.ndarray,
    candidate_rows: np.ndarray,
    statistic: Statistic,
    *,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedDelta:
    """Paired percentile bootstrap of candidate - baseline (rows aligned example by example).

    For lower-is-better metrics `delta` is still candidate - baseline; `prob_improvement` and the p-value
    account for the direction.
    """
    baseline_rows = np.asarray(baseline_rows, dtype=float)
    candidate_rows = np.asarray(candidate_rows, dtype=float)
    if baseline_rows.shape[0] != candidate_rows.shape[0]:
        raise ValueError("paired bootstrap needs the same examples in both runs")
    n = baseline_rows.shape[0]
    if n == 0:
        nan = float("nan")
        return PairedDelta(nan, nan, nan, nan, nan, confidence, 0, nan, nan)
    base = float(statistic(baseline_rows.sum(axis=0)))
    cand = float(statistic(candidate_rows.sum(axis=0)))
    counts = resample_counts(n, n_resamples, np.random.default_rng(seed))
    deltas = np.asarray(statistic(counts @ candidate_rows), float) - np.asarray(
        statistic(counts @ baseline_rows), float
    )
    low, high = _quantiles(deltas, confidence)
    finite = deltas[np.isfinite(deltas)]
    signed = finite if higher_is_better else -finite
    prob = float(np.mean(signed > 0)) if finite.size else float("nan")
    p_value = float(np.mean(signed <= 0)) if finite.size else float("nan")
    return PairedDelta(base, cand, cand - base, low, high, confidence, n, prob, p_value)
