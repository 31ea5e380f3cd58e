"""Fixed-horizon tests for A/B comparisons, sample sizes and the sample-ratio-mismatch check.

- rates: two-proportion z-test (pooled) and Fisher's exact test, Wald CI of the difference;
- scores: Mann-Whitney U and a bootstrap CI of the difference in means (independent arms);
- sample size per arm for a difference in proportions (Cohen's h) or means (standardised effect),
  solved on the exact two-sided normal power function (the same one statsmodels' NormalIndPower uses);
- SRM: chi-square goodness of fit of arm counts against the configured split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class RateTest:
    """Treatment vs control on a proportion."""

    control_rate: float
    treatment_rate: float
    diff: float
    ci_low: float
    ci_high: float
    z: float
    p_value_z: float
    p_value_fisher: float
    method: str
    """Which p-value the verdict uses: 'z' with enough expected counts, else 'fisher'."""

    @property
    def p_value(self) -> float:
        return self.p_value_z if self.method == "z" else self.p_value_fisher


def two_proportion_test(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, *, confidence: float = 0.95
) -> RateTest:
    """Two-sided pooled z-test and Fisher's exact test for treatment rate - control rate."""
    if n_control <= 0 or n_treatment <= 0:
        raise ValueError("both arms need at least one observation")
    p1, p2 = x_control / n_control, x_treatment / n_treatment
    pooled = (x_control + x_treatment) / (n_control + n_treatment)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    if se_pooled > 0:
        z = (p2 - p1) / se_pooled
        p_z = float(2 * stats.norm.sf(abs(z)))
    else:
        z, p_z = 0.0, 1.0
    table = [[x_treatment, n_treatment - x_treatment], [x_control, n_control - x_control]]
    p_fisher = float(stats.fisher_exact(table, alternative="two-sided")[1])
    se = math.sqrt(p1 * (1 - p1) / n_control + p2 * (1 - p2) / n_treatment)
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * se
    expected_min = min(
        pooled * n_control, (1 - pooled) * n_control, pooled * n_treatment, (1 - pooled) * n_treatment
    )
    method = "z" if expected_min >= 5 else "fisher"
    return RateTest(p1, p2, p2 - p1, p2 - p1 - half, p2 - p1 + half, float(z), p_z, p_fisher, method)


@dataclass(frozen=True)
class MeanTest:
    """Treatment vs control on a continuous score."""

    control_mean: float
    treatment_mean: float
    diff: float
    ci_low: float
    ci_high: float
    mann_whitney_u: float
    p_value: float
    """Mann-Whitney U two-sided p-value."""


def mean_difference_test(
    control: Sequence[float],
    treatment: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> MeanTest:
    """Mann-Whitney U test plus a percentile bootstrap CI of mean(treatment) - mean(control)."""
    a = np.asarray(control, dtype=float)
    b = np.asarray(treatment, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("both arms need at least one observation")
    if np.all(a == a[0]) and np.all(b == b[0]) and a[0] == b[0]:
        u, p = float(a.size * b.size / 2), 1.0
    else:
        result = stats.mannwhitneyu(b, a, alternative="two-sided")
        u, p = float(result.statistic), float(result.pvalue)
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, size=(n_resamples, b.size))].mean(axis=1)
    low, high = np.quantile(means_b - means_a, [(1 - confidence) / 2, (1 + confidence) / 2])
    return MeanTest(
        float(a.mean()), float(b.mean()), float(b.mean() - a.mean()), float(low), float(high), u, p
    )


@dataclass(frozen=True)
class SampleSize:
    """Observations needed per arm to detect the effect with the given power."""

    n_control: int
    n_treatment: int
    effect_size: float
    alpha: float
    power: float

    @property
    def total(self) -> int:
        return self.n_control + self.n_treatment


def _power(effect: float, n1: float, ratio: float, alpha: float) -> float:
    se = math.sqrt(1.0 / n1 + 1.0 / (ratio * n1))
    crit = float(stats.norm.ppf(1 - alpha / 2))
    shift = abs(effect) / se
    return float(stats.norm.sf(crit - shift) + stats.norm.cdf(-crit - shift))


def sample_size_for_effect(
    effect_size: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> SampleSize:
    """Per-arm n for a standardised effect (two-sided z-test); `ratio` = n_treatment / n_control."""
    if effect_size == 0:
        raise ValueError("effect size must be non-zero")
    if not 0 < alpha < 1 or not 0 < power < 1 or ratio <= 0:
        raise ValueError("need 0 < alpha < 1, 0 < power < 1 and ratio > 0")
    crit = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    guess = (crit / abs(effect_size)) ** 2 * (1 + 1 / ratio)
    n1 = optimize.brentq(lambda n: _power(effect_size, n, ratio, alpha) - power, 1e-6, guess * 4 + 10)
    n1_int = math.ceil(n1 - 1e-9)
    return SampleSize(n1_int, math.ceil(n1_int * ratio - 1e-9), float(effect_size), alpha, power)


def cohens_h(p_control: float, p_treatment: float) -> float:
    """Effect size of two proportions on the arcsine scale."""
    return 2 * math.asin(math.sqrt(p_treatment)) - 2 * math.asin(math.sqrt(p_control))


def sample_size_proportions(
    p_control: float, mde: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> SampleSize:
    """Per-arm n to detect rate p_control -> p_control + mde (absolute)."""
    p_treatment = p_control + mde
    if not 0 <= p_control <= 1 or not 0 <= p_treatment <= 1:
        raise ValueError(f"rates must stay in [0, 1]: {p_control} + {mde}")
    return sample_size_for_effect(cohens_h(p_control, p_treatment), alpha=alpha, power=power, ratio=ratio)


def sample_size_means(
    sd: float, mde: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> SampleSize:
    """Per-arm n to detect a difference in means of `mde` when the outcome's standard deviation is `sd`."""
    if sd <= 0:
        raise ValueError("standard deviation must be positive")
    return sample_size_for_effect(mde / sd, alpha=alpha, power=power, ratio=ratio)


@dataclass(frozen=True)
class SrmCheck:
    """Sample ratio mismatch: are arm counts consistent with the intended split?"""

    observed: dict[str, int]
    expected_share: dict[str, float]
    chi2: float
    p_value: float
    threshold: float
    mismatch: bool


def sample_ratio_mismatch(
    counts: Mapping[str, int], weights: Mapping[str, float] | None = None, *, threshold: float = 0.001
) -> SrmCheck:
    """Chi-square goodness-of-fit of `counts` against `weights` (default: equal split)."""
    arms = list(counts)
    if len(arms) < 2:
        raise ValueError("SRM check needs at least two arms")
    if weights is None:
        weights = {arm: 1.0 for arm in arms}
    missing = [arm for arm in arms if arm not in weights]
    if missing:
        raise ValueError(f"no weight for arm(s) {missing}")
    total_w = sum(weights[arm] for arm in arms)
    share = {arm: weights[arm] / total_w for arm in arms}
    observed = np.array([counts[arm] for arm in arms], dtype=float)
    expected = observed.sum() * np.array([share[arm] for arm in arms])
    chi2, p = stats.chisquare(observed, expected)
    return SrmCheck(dict(counts), share, float(chi2), float(p), threshold, bool(p < threshold))
