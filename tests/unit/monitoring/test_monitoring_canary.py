"""The progressive canary's rule (`monitoring.canary`), fed hand-made observations: the test advances,
promotes and rolls back on the evidence it should; guardrails, SRM, budgets, minimums and the timeout do
what the module docstring says; the array form decides as the single-canary form does; the settings map
the old single-step keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from evals.stats.fixed_horizon import sample_ratio_mismatch
from monitoring.canary import (
    Action,
    ArmHealth,
    ArmScores,
    CanaryObservation,
    CanaryPolicy,
    CanaryState,
    Code,
    Guardrails,
    Reason,
    StepData,
    combined_effect,
    decide_codes,
    quantile_lower_bound,
    srm_p_values,
    wilson_lower,
)
from monitoring.spec import CanarySettings


def scores(n: int, mean: float) -> ArmScores:
    """n 0/1 scores with (about) the given mean, spread evenly."""
    ones = round(n * mean)
    return ArmScores.of([1.0] * ones + [0.0] * (n - ones))


def step(champion: ArmScores, challenger: ArmScores) -> StepData:
    """A step whose routed counts are the scored ones (no SRM unless the caller wants one)."""
    return StepData(champion, challenger, champion.n, challenger.n)


def healthy(n: int, latency: float = 100.0) -> ArmHealth:
    return ArmHealth(requests=n, errors=0, empty=0, latencies_ms=(latency,) * n)


def look(
    *steps: StepData, challenger: ArmHealth | None = None, champion: ArmHealth | None = None, at: float = 0.0
):
    return CanaryObservation(
        steps=list(steps),
        challenger=challenger or healthy(sum(s.challenger.n for s in steps)),
        champion=champion or healthy(sum(s.champion.n for s in steps)),
        elapsed_s=at,
    )


POLICY = CanaryPolicy(steps=(0.2, 0.5), mde=0.2, min_requests_per_step=10, max_requests_per_step=30)


def test_a_clearly_better_challenger_advances_then_promotes() -> None:
    first = step(scores(40, 0.3), scores(20, 0.95))
    d = POLICY.decide(POLICY.start(), look(first))
    assert (d.action, d.reason, d.next_weight) == (Action.ADVANCE, Reason.NON_INFERIOR, 0.5)
    assert d.state.step == 1 and d.statistics["ci_low"] > -0.2 and d.statistics["test_active"]
    assert "advance to 50%" in d.message
    # the next step needs its own minimum of challenger traffic, even though the test already said so
    d2 = POLICY.decide(d.state, look(first, step(scores(3, 0.3), scores(3, 1.0))))
    assert d2.action == Action.WAIT and d2.state.step == 1
    d3 = POLICY.decide(d2.state, look(first, step(scores(12, 0.3), scores(12, 0.95))))
    assert (d3.action, d3.reason, d3.next_weight) == (Action.PROMOTE, Reason.NON_INFERIOR, 1.0)
    assert d3.statistics["step"] == 2 and d3.statistics["n"] == {"champion": 12, "challenger": 12}


def test_a_clearly_worse_challenger_rolls_back() -> None:
    d = POLICY.decide(POLICY.start(), look(step(scores(60, 0.9), scores(30, 0.1))))
    assert (d.action, d.reason) == (Action.ROLLBACK, Reason.WORSE)
    assert d.statistics["ci_high"] < 0 and d.statistics["p_value"] < 0.05
    assert "worse than the champion" in d.message


def test_nothing_is_decided_before_the_burn_in() -> None:
    d = POLICY.decide(POLICY.start(), look(step(scores(9, 1.0), scores(9, 0.0))))
    assert d.action == Action.WAIT and not d.statistics["test_active"]
    assert d.state.ci_low == -math.inf and d.statistics["ci_low"] is None


def test_budget_advances_an_early_step_without_evidence_of_harm_but_never_the_last() -> None:
    equal = step(scores(120, 0.6), scores(30, 0.6))
    d = POLICY.decide(POLICY.start(), look(equal))
    assert (d.action, d.reason) == (Action.ADVANCE, Reason.BUDGET)
    assert "budget of 30 reached without evidence of harm" in d.message
    last = POLICY.decide(d.state, look(equal, step(scores(40, 0.6), scores(40, 0.6))))
    assert last.action == Action.WAIT  # inconclusive: the last step waits for the test


def test_slightly_worse_within_mde_is_not_a_rollback() -> None:
    # worse by 0.05 on a huge sample: the interval is below 0 but above -mde → not worse by mde: promote
    p = CanaryPolicy(steps=(0.5,), mde=0.2, min_requests_per_step=10)
    big = step(ArmScores.of([0.6] * 5000 + [0.7] * 5000), ArmScores.of([0.55] * 5000 + [0.65] * 5000))
    d = p.decide(p.start(), look(big))
    assert d.statistics["ci_high"] < 0 < d.statistics["ci_low"] + 0.2
    assert (d.action, d.reason) == (Action.PROMOTE, Reason.NON_INFERIOR)


def test_the_running_interval_only_narrows() -> None:
    p = CanaryPolicy(steps=(0.5,), mde=0.05, min_requests_per_step=10)
    d1 = p.decide(p.start(), look(step(scores(200, 0.6), scores(200, 0.6))))
    # a later look whose own interval is wider (fewer data: as if rows vanished) keeps the narrower one
    d2 = p.decide(d1.state, look(step(scores(20, 0.6), scores(20, 0.6))))
    assert d2.state.ci_low == d1.state.ci_low and d2.state.ci_high == d1.state.ci_high
    assert d2.state.p_value <= d1.state.p_value
    assert CanaryState.from_dict(d2.state.to_dict()) == d2.state
    assert CanaryState.from_dict(p.start().to_dict()) == p.start()


def test_error_guardrail_rolls_back_at_once_but_not_for_errors_both_arms_share() -> None:
    data = step(scores(4, 0.5), scores(2, 0.5))
    broken = ArmHealth(requests=12, errors=10, empty=0, latencies_ms=(100.0, 100.0))
    d = POLICY.decide(POLICY.start(), look(data, challenger=broken))
    assert (d.action, d.reason) == (Action.ROLLBACK, Reason.GUARDRAIL)
    assert d.statistics["guardrails"]["error_rate"]["tripped"] and "error_rate" in d.message
    # the service fails for everybody: not the challenger's fault
    d = POLICY.decide(
        POLICY.start(), look(data, challenger=broken, champion=ArmHealth(50, 45, 0, (1.0,) * 5))
    )
    assert d.action == Action.WAIT
    # too few requests to judge yet
    d = POLICY.decide(POLICY.start(), look(data, challenger=ArmHealth(5, 5, 0, ())))
    assert d.action == Action.WAIT


def test_one_error_in_a_hundred_does_not_trip_the_five_percent_cap() -> None:
    d = POLICY.decide(
        POLICY.start(), look(step(scores(4, 0.5), scores(2, 0.5)), challenger=ArmHealth(100, 1, 0, ()))
    )
    assert d.action == Action.WAIT and not d.statistics["guardrails"]["error_rate"]["tripped"]


def test_empty_answer_and_latency_guardrails() -> None:
    p = CanaryPolicy(steps=(0.5,), guardrails=Guardrails(max_empty_rate=0.1, max_p99_latency_ms=2000))
    data = step(scores(4, 0.5), scores(4, 0.5))
    empty = ArmHealth(requests=30, errors=0, empty=15, latencies_ms=(100.0,) * 30)
    assert p.decide(p.start(), look(data, challenger=empty)).reason == Reason.GUARDRAIL
    slow = ArmHealth(requests=30, errors=0, empty=0, latencies_ms=(100.0,) * 25 + (5000.0,) * 5)
    d = p.decide(p.start(), look(data, challenger=slow, champion=healthy(30)))
    assert d.reason == Reason.GUARDRAIL and d.statistics["guardrails"]["p99_latency_ms"]["tripped"]
    one_slow = ArmHealth(requests=30, errors=0, empty=0, latencies_ms=(100.0,) * 29 + (5000.0,))
    assert p.decide(p.start(), look(data, challenger=one_slow)).action == Action.WAIT
    off = CanaryPolicy(steps=(0.5,), guardrails=Guardrails(max_error_rate=None, max_empty_rate=None))
    assert off.decide(off.start(), look(data, challenger=empty)).statistics["guardrails"] == {}


def test_srm_rolls_back_a_broken_split() -> None:
    broken = StepData(scores(20, 0.5), scores(20, 0.5), routed_champion=300, routed_challenger=20)
    d = POLICY.decide(POLICY.start(), look(broken))  # step 1 is 20 %: 20 of 320 is far from it
    assert (d.action, d.reason) == (Action.ROLLBACK, Reason.SRM) and d.statistics["srm_p_value"] < 0.001
    assert "sample ratio mismatch" in d.message
    fine = StepData(scores(20, 0.5), scores(20, 0.5), routed_champion=240, routed_challenger=62)
    assert POLICY.decide(POLICY.start(), look(fine)).reason != Reason.SRM
    off = CanaryPolicy(steps=(0.2, 0.5), srm_p_value=None)
    assert off.decide(off.start(), look(broken)).reason != Reason.SRM


def test_timeout_rolls_back() -> None:
    p = CanaryPolicy(steps=(0.5,), timeout_s=60)
    d = p.decide(p.start(), look(step(scores(3, 0.5), scores(3, 0.5)), at=61))
    assert (d.action, d.reason) == (Action.ROLLBACK, Reason.TIMEOUT) and "no decision after 61 s" in d.message


def test_steps_are_combined_by_inverse_variance_not_pooled() -> None:
    # the traffic got easier between steps (both arms 0.2 → 0.8) while the challenger's share grew:
    # pooling would credit the challenger with the easier traffic; within-step estimates do not
    early = np.array([[[380, 76, 76]], [[20, 4, 4]]], dtype=float)  # (arm, step, stats): 5 % step
    late = np.array([[[200, 160, 160]], [[200, 160, 160]]], dtype=float)  # 50 % step
    champion = np.concatenate([early[0], late[0]])[None]
    challenger = np.concatenate([early[1], late[1]])[None]
    delta, variance = combined_effect(champion, challenger, binary=True)
    assert abs(float(delta[0])) < 1e-9 and float(variance[0]) > 0
    pooled = (4 + 160) / 220 - (76 + 160) / 580
    assert pooled > 0.3
    none, inf = combined_effect(np.zeros((1, 3)), np.zeros((1, 3)))
    assert math.isnan(float(none)) and math.isinf(float(inf))


def test_bounds_wilson_and_p99() -> None:
    assert wilson_lower(0, 0, 0.05) == 0.0
    assert 0.5 < wilson_lower(3, 3, 0.05) < 0.6
    assert wilson_lower(1, 100, 0.05) < 0.01
    # 20 samples: the 19th smallest is the 95 % lower bound of the p99 (P(Bin(20, .99) >= 19) = 0.983)
    values = list(range(1, 21))
    assert quantile_lower_bound(values, 0.99, 0.05) == 19
    assert quantile_lower_bound([], 0.99, 0.05) == -math.inf


def test_srm_p_values_agree_with_the_chi_square_on_clear_cases_and_stay_calm_on_fair_splits() -> None:
    assert float(srm_p_values(500, 500, 0.5)) > 0.5
    assert float(srm_p_values(300, 20, 0.2)) < 1e-6
    assert sample_ratio_mismatch({"c": 300, "t": 20}, {"c": 0.8, "t": 0.2}).mismatch
    # many looks at fair splits: the always-valid test hardly ever trips (the point of using it)
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.random((2000, 2000)) < 0.05, axis=1)
    n = np.arange(1, 2001)
    ever = (srm_p_values(n - t, t, 0.05) < 0.001).any(axis=1)
    assert ever.mean() < 0.005


def test_the_array_rule_matches_the_single_canary_rule() -> None:
    codes = decide_codes(
        ci_low=np.array([-0.1, -0.5, -0.5, -0.5, -0.5, -0.5]),
        ci_high=np.array([0.3, -0.1, 0.2, 0.2, 0.2, 0.2]),
        active=np.array([True, True, True, True, True, True]),
        step_requests=np.array([20, 20, 40, 40, 5, 40]),
        last_step=np.array([False, False, False, True, False, False]),
        guardrail=np.array([False, False, False, False, True, False]),
        srm=np.array([False, False, False, False, False, True]),
        timed_out=False,
        mde=0.2,
        min_requests=10,
        max_requests=30,
    )
    assert [Code(c) for c in codes] == [
        Code.NON_INFERIOR,
        Code.WORSE,
        Code.BUDGET,
        Code.WAITING,
        Code.GUARDRAIL,
        Code.SRM,
    ]


def test_policy_checks_its_steps() -> None:
    with pytest.raises(ValueError, match="increase"):
        CanaryPolicy(steps=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        CanaryPolicy(steps=(0.5, 1.0))


def test_settings_map_the_old_single_step_keys() -> None:
    old = CanarySettings(weight=0.3, min_requests_per_arm=12, margin=0.1)
    assert (old.steps, old.min_requests_per_step, old.mde) == ([0.3], 12, 0.1)
    policy = CanaryPolicy.from_settings(old)
    assert policy.steps == (0.3,) and policy.mde == 0.1 and policy.min_requests_per_step == 12
    new = CanarySettings()
    assert new.steps == [0.05, 0.2, 0.5] and new.mde == 0.05 and new.max_requests_per_step == 100
    with pytest.raises(ValidationError, match="not both"):
        CanarySettings(weight=0.3, steps=[0.1, 0.5])
    with pytest.raises(ValidationError, match="increase"):
        CanarySettings(steps=[0.5, 0.2])
    with pytest.raises(ValidationError, match="100 % is the promotion"):
        CanarySettings(steps=[0.5, 1.0])
    with pytest.raises(ValidationError, match="below min_requests_per_step"):
        CanarySettings(min_requests_per_step=50, max_requests_per_step=10)
    assert CanaryPolicy.from_settings(CanarySettings(guardrails={"max_p99_latency_ms": 900})).guardrails == (
        Guardrails(max_p99_latency_ms=900)
    )
