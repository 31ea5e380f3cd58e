"""Statistics checked against scipy/statsmodels and by simulation (vectorised, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evals.metrics import ratio_statistic
from evals.stats.bootstrap import bootstrap_interval, paired_bootstrap, resample_counts
from evals.stats.fixed_horizon import (
    cohens_h,
    mean_difference_test,
    sample_ratio_mismatch,
    sample_size_means,
    sample_size_proportions,
    two_proportion_test,
)
from evals.stats.sequential import msprt, msprt_paths

ALPHA = 0.05


def mean_rows(values: np.ndarray) -> np.ndarray:
    return np.column_stack([values, np.ones_like(values)])


# ---------------------------------------------------------------- bootstrap


def test_resample_counts_rows_sum_to_n_and_are_uniform() -> None:
    counts = resample_counts(50, 4000, np.random.default_rng(0))
    assert counts.shape == (4000, 50)
    assert np.all(counts.sum(axis=1) == 50)
    # Each example is drawn once per resample on average.
    assert np.allclose(counts.mean(axis=0), 1.0, atol=0.08)


def test_bootstrap_interval_of_mean_matches_point_estimate() -> None:
    values = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    interval = bootstrap_interval(mean_rows(values), ratio_statistic, n_resamples=2000, seed=1)
    assert interval.estimate == pytest.approx(values.mean())
    assert interval.low < interval.estimate < interval.high
    assert interval.n == 8


def test_bootstrap_ci_covers_true_mean_at_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    sims, n, true_mean = 400, 60, 0.3
    covered = 0
    for i in range(sims):
        values = rng.normal(true_mean, 1.0, n)
        interval = bootstrap_interval(mean_rows(values), ratio_statistic, n_resamples=800, seed=i)
        covered += interval.low <= true_mean <= interval.high
    coverage = covered / sims
    # Percentile bootstrap with n=60 is slightly anti-conservative; ~0.93-0.95 expected.
    assert 0.90 <= coverage <= 0.98, coverage


def test_paired_bootstrap_covers_true_delta_and_uses_pairing() -> None:
    rng = np.random.default_rng(11)
    sims, n, true_delta = 300, 80, 0.1
    covered, widths_paired, widths_unpaired = 0, [], []
    for i in range(sims):
        difficulty = rng.normal(0, 1.0, n)  # shared per-example difficulty: pairing removes it
        base = difficulty + rng.normal(0, 0.3, n)
        cand = difficulty + true_delta + rng.normal(0, 0.3, n)
        delta = paired_bootstrap(mean_rows(base), mean_rows(cand), ratio_statistic, n_resamples=600, seed=i)
        covered += delta.low <= true_delta <= delta.high
        widths_paired.append(delta.high - delta.low)
        widths_unpaired.append(2 * 1.96 * np.sqrt(base.var(ddof=1) / n + cand.var(ddof=1) / n))
    assert 0.90 <= covered / sims <= 0.98
    assert np.mean(widths_paired) < 0.5 * np.mean(widths_unpaired)


def test_paired_bootstrap_direction_for_lower_is_better() -> None:
    base = mean_rows(np.full(30, 0.5))
    cand = mean_rows(np.full(30, 0.2))
    delta = paired_bootstrap(base, cand, ratio_statistic, higher_is_better=False, n_resamples=200)
    assert delta.delta == pytest.approx(-0.3)
    assert delta.prob_improvement == 1.0
    assert delta.p_value_no_improvement == 0.0


# ---------------------------------------------------------------- fixed-horizon tests


def test_two_proportion_z_matches_statsmodels_and_fisher_matches_scipy() -> None:
    from statsmodels.stats.proportion import proportions_ztest

    result = two_proportion_test(45, 500, 70, 520)
    z, p = proportions_ztest([70, 45], [520, 500])
    assert result.z == pytest.approx(z)
    assert result.p_value_z == pytest.approx(p)
    assert result.method == "z"
    _, p_fisher = stats.fisher_exact([[70, 450], [45, 455]])
    assert result.p_value_fisher == pytest.approx(p_fisher)
    assert result.diff == pytest.approx(70 / 520 - 45 / 500)


def test_small_counts_use_fisher() -> None:
    result = two_proportion_test(1, 10, 6, 10)
    assert result.method == "fisher"
    assert result.p_value == pytest.approx(stats.fisher_exact([[6, 4], [1, 9]])[1])


def test_mean_difference_matches_scipy_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 200), rng.normal(0.3, 1, 180)
    result = mean_difference_test(a, b, n_resamples=1000)
    reference = stats.mannwhitneyu(b, a, alternative="two-sided")
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.diff == pytest.approx(b.mean() - a.mean())
    assert result.ci_low < result.diff < result.ci_high


def test_sample_sizes_match_statsmodels() -> None:
    from statsmodels.stats.power import NormalIndPower

    solver = NormalIndPower()
    for p, mde, ratio in [(0.10, 0.02, 1.0), (0.5, -0.05, 1.0), (0.2, 0.05, 0.25)]:
        size = sample_size_proportions(p, mde, ratio=ratio)
        expected = solver.solve_power(effect_size=cohens_h(p, p + mde), alpha=0.05, power=0.8, ratio=ratio)
        assert size.n_control == int(np.ceil(expected))
    size = sample_size_means(2.0, 0.5, alpha=0.01, power=0.9)
    expected = solver.solve_power(effect_size=0.25, alpha=0.01, power=0.9, ratio=1.0)
    assert size.n_control == int(np.ceil(expected))
    # Textbook value: 0.1 -> 0.12 needs ~3.8k per arm.
    assert 3700 < sample_size_proportions(0.1, 0.02).n_control < 3900


def test_sample_size_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        sample_size_means(1.0, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_size_proportions(0.95, 0.1)


def test_srm_matches_scipy_and_flags_mismatch() -> None:
    ok = sample_ratio_mismatch({"champion": 5040, "challenger": 4960})
    assert ok.p_value == pytest.approx(stats.chisquare([5040, 4960]).pvalue)
    assert not ok.mismatch
    bad = sample_ratio_mismatch({"champion": 5400, "challenger": 4600})
    assert bad.mismatch
    weighted = sample_ratio_mismatch(
        {"champion": 9000, "challenger": 1000}, {"champion": 0.9, "challenger": 0.1}
    )
    assert not weighted.mismatch
    with pytest.raises(ValueError, match="at least two arms"):
        sample_ratio_mismatch({"solo": 10})


# ---------------------------------------------------------------- sequential test


def _simulate(rng: np.random.Generator, runs: int, steps: int, effect: float, binary: bool) -> np.ndarray:
    treat = rng.random((runs, steps)) < 0.5
    if binary:
        p = np.where(treat, 0.2 + effect, 0.2)
        return treat, (rng.random((runs, steps)) < p).astype(float)
    return treat, rng.normal(0.0, 1.0, (runs, steps)) + np.where(treat, effect, 0.0)


@pytest.mark.parametrize("binary", [False, True])
def test_msprt_aa_false_positive_rate_at_most_alpha(binary: bool) -> None:
    # 2,000 A/A experiments, monitored after every single request: the rate of ever rejecting stays <= alpha.
    treat, values = _simulate(np.random.default_rng(2024), 2000, 1500, 0.0, binary)
    paths = msprt_paths(treat, values, alpha=ALPHA, binary=binary)
    ever_rejected = (paths.p_value <= ALPHA).any(axis=1)
    fpr = ever_rejected.mean()
    # Allow for simulation noise (binomial sd ~0.005 at 2,000 runs).
    assert fpr <= ALPHA + 0.01, fpr
    # The always-valid confidence sequence covers the true effect (0) at all times with the same rate.
    missed = ((paths.ci_low > 0) | (paths.ci_high < 0)).any(axis=1)
    assert missed.mean() <= ALPHA + 0.01


def test_peeking_with_fixed_horizon_z_test_inflates_false_positives() -> None:
    # The reason the sequential test exists: checking a z-test after every batch rejects far too often.
    treat, values = _simulate(np.random.default_rng(5), 1000, 1500, 0.0, False)
    n_t = np.cumsum(treat, axis=1)
    n_c = np.cumsum(~treat, axis=1)
    m_t = np.cumsum(np.where(treat, values, 0), axis=1) / np.maximum(n_t, 1)
    m_c = np.cumsum(np.where(~treat, values, 0), axis=1) / np.maximum(n_c, 1)
    z = (m_t - m_c) / np.sqrt(1 / np.maximum(n_t, 1) + 1 / np.maximum(n_c, 1))
    looks = np.arange(100, 1500, 50)
    peeking_fpr = (np.abs(z[:, looks]) > 1.96).any(axis=1).mean()
    paths = msprt_paths(treat, values)
    assert peeking_fpr > 2 * ALPHA
    assert (paths.p_value <= ALPHA).any(axis=1).mean() <= ALPHA + 0.01


@pytest.mark.parametrize(("binary", "effect"), [(False, 0.3), (True, 0.1)])
def test_msprt_has_power_on_planted_effect(binary: bool, effect: float) -> None:
    treat, values = _simulate(np.random.default_rng(99), 500, 1500, effect, binary)
    paths = msprt_paths(treat, values, binary=binary)
    power = (paths.p_value[:, -1] <= ALPHA).mean()
    assert power >= 0.8, power
    # ... and detects it with the right sign: the final bound excludes 0 from below.
    rejected = paths.p_value[:, -1] <= ALPHA
    assert np.all(paths.ci_low[rejected, -1] > 0)


def test_msprt_single_stream_result() -> None:
    rng = np.random.default_rng(0)
    treat = np.tile([True, False], 400)
    values = rng.normal(0, 1, 800) + np.where(treat, 0.5, 0.0)
    result = msprt(treat, values)
    assert result.rejected
    assert result.stopped_at is not None and result.stopped_at < 800
    assert result.n_treatment == result.n_control == 400
    assert result.ci_low < result.estimate < result.ci_high
    # p-values never increase (running minimum) and are 1 during burn-in.
    p = result.path.p_value
    assert np.all(np.diff(p) <= 1e-15)
    assert np.all(p[: 2 * result.burn_in - 2] == 1.0)
