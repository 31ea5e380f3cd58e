"""The promotion gate on planted data: a clearly better challenger passes, a worse one fails, and why."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from evals.errors import RunDataError
from evals.gate import GateDecision, GatePolicy, gate

RNG = np.random.default_rng(0)


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    return (np.random.default_rng(seed).random(n) < p).astype(float).tolist()


def regression_pair(
    run_factory: Callable[..., Any], p_champ: float, p_chall: float, n: int = 120
) -> tuple[Any, Any]:
    slices = ["shipping", "account", "billing"] * (n // 3)
    base = bernoulli(p_champ, n, 1)
    # The challenger keeps most of the champion's answers (paired), changing some.
    flip = np.random.default_rng(2).random(n)
    chall = [1.0 if f < p_chall else 0.0 for f in flip] if p_chall != p_champ else list(base)
    champion = run_factory("regression", "champ", base, slices=slices, role="regression", margin=0.1)
    challenger = run_factory("regression", "chall", chall, slices=slices, role="regression", margin=0.1)
    return champion, challenger


def test_clearly_better_challenger_passes(run_factory: Callable[..., Any]) -> None:
    champ_t = run_factory("target", "champ", bernoulli(0.2, 60, 3))
    chall_t = run_factory("target", "chall", bernoulli(0.8, 60, 4))
    champ_r, chall_r = regression_pair(run_factory, 0.7, 0.7)
    decision = gate([champ_t, champ_r], [chall_t, chall_r])
    assert decision.passed, decision.summary
    improvement = next(c for c in decision.checks if c.kind == "improvement")
    assert improvement.ci_low is not None and improvement.ci_low > 0
    assert improvement.n_pairs == 60
    scopes = {c.scope for c in decision.checks if c.kind == "non_inferiority"}
    assert scopes == {"regression", "regression/shipping", "regression/account", "regression/billing"}
    assert decision.summary.startswith("PASS")


def test_worse_challenger_fails_on_target(run_factory: Callable[..., Any]) -> None:
    champ = run_factory("target", "champ", bernoulli(0.7, 60, 5))
    chall = run_factory("target", "chall", bernoulli(0.3, 60, 6))
    decision = gate(champ, chall)
    assert not decision.passed
    failed = decision.failed_checks()
    assert [c.kind for c in failed] == ["improvement"]
    assert "no clear improvement" in failed[0].reason
    assert decision.summary.startswith("FAIL")


def test_no_difference_is_not_an_improvement(run_factory: Callable[..., Any]) -> None:
    scores = bernoulli(0.5, 60, 7)
    decision = gate(run_factory("target", "champ", scores), run_factory("target", "chall", scores))
    assert not decision.passed


def test_regression_on_one_slice_fails_the_gate(run_factory: Callable[..., Any]) -> None:
    n = 90
    slices = ["shipping", "account", "billing"] * (n // 3)
    base = [1.0] * n
    worse = [0.0 if s == "billing" else 1.0 for s in slices]
    champ_r = run_factory("regression", "champ", base, slices=slices, role="regression", margin=0.1)
    chall_r = run_factory("regression", "chall", worse, slices=slices, role="regression", margin=0.1)
    champ_t = run_factory("target", "champ", bernoulli(0.2, 60, 8))
    chall_t = run_factory("target", "chall", bernoulli(0.9, 60, 9))
    decision = gate([champ_t, champ_r], [chall_t, chall_r])
    assert not decision.passed
    failed = {c.scope for c in decision.failed_checks()}
    assert "regression/billing" in failed
    assert "regression/shipping" not in failed
    # Evidence beyond the decision: every metric's paired delta per suite and slice.
    billing = next(d for d in decision.deltas if d["suite"] == "regression" and d["scope"] == "billing")
    assert billing["delta"] == -1.0 and billing["n_pairs"] == 30
    assert {d["scope"] for d in decision.deltas if d["suite"] == "target"} == {"__all__"}


def test_small_drop_within_margin_passes_non_inferiority(run_factory: Callable[..., Any]) -> None:
    n = 300
    base = [1.0] * n
    slightly_worse = [0.0 if i % 100 == 0 else 1.0 for i in range(n)]  # -1 point
    champ_r = run_factory("regression", "champ", base, role="regression", margin=0.05)
    chall_r = run_factory("regression", "chall", slightly_worse, role="regression", margin=0.05)
    decision = gate(
        [run_factory("target", "champ", [0.0] * 30), champ_r],
        [run_factory("target", "chall", [1.0] * 30), chall_r],
    )
    assert decision.passed, decision.summary


def test_incomplete_run_fails_completeness(run_factory: Callable[..., Any]) -> None:
    champ = run_factory("target", "champ", bernoulli(0.2, 40, 10))
    chall = run_factory("target", "chall", bernoulli(0.95, 40, 11), failed=5)
    decision = gate(champ, chall)
    assert not decision.passed
    assert any(c.kind == "completeness" and not c.passed and "35/40" in c.reason for c in decision.checks)
    assert gate(champ, chall, GatePolicy(require_complete=False)).passed


def test_too_few_pairs_is_not_evidence(run_factory: Callable[..., Any]) -> None:
    decision = gate(run_factory("target", "champ", [0.0] * 3), run_factory("target", "chall", [1.0] * 3))
    assert not decision.passed
    assert "not enough evidence" in decision.failed_checks()[0].reason


def test_target_slice_scope_and_policy_overrides(run_factory: Callable[..., Any]) -> None:
    slices = ["refunds", "other"] * 40
    champ = run_factory(
        "support", "champ", [0.0 if s == "refunds" else 1.0 for s in slices], slices=slices, role="none"
    )
    chall = run_factory("support", "chall", [1.0] * 80, slices=slices, role="none")
    decision = gate(
        champ, chall, GatePolicy(target=("support/refunds",), regression=("support/other",), margin=0.0)
    )
    assert decision.passed, decision.summary
    with pytest.raises(RunDataError, match="has no slice 'billing'"):
        gate(champ, chall, GatePolicy(target=("support/billing",)))


def test_input_errors(run_factory: Callable[..., Any]) -> None:
    a = run_factory("target", "champ", [1.0] * 10)
    b = run_factory("other", "chall", [1.0] * 10)
    with pytest.raises(RunDataError, match="only one side"):
        gate(a, b)
    none_role = run_factory("x", "champ", [1.0] * 10, role="none")
    with pytest.raises(RunDataError, match="no target"):
        gate(none_role, run_factory("x", "chall", [1.0] * 10, role="none"))
    with pytest.raises(RunDataError, match="two runs of suite"):
        gate([a, a], [a])


def test_pairing_uses_only_common_examples(run_factory: Callable[..., Any]) -> None:
    champ = run_factory("target", "champ", [0.0] * 20, ids=[f"e{i}" for i in range(20)])
    chall = run_factory("target", "chall", [1.0] * 20, ids=[f"e{i}" for i in range(10, 30)])
    decision = gate(champ, chall, GatePolicy(require_complete=False))
    assert next(c for c in decision.checks if c.kind == "improvement").n_pairs == 10


def test_decision_round_trips_through_json(run_factory: Callable[..., Any]) -> None:
    decision = gate(
        run_factory("target", "champ", bernoulli(0.2, 40, 12)),
        run_factory("target", "chall", bernoulli(0.9, 40, 13)),
    )
    text = decision.to_json()
    raw = json.loads(text)
    assert raw["passed"] is True and raw["checks"][0]["kind"] == "completeness"
    again = GateDecision.from_dict(raw)
    assert again.passed == decision.passed
    assert [c.scope for c in again.checks] == [c.scope for c in decision.checks]
    assert raw["champion"]["runs"]["target"]["served_by"] == {"champ@v1": 40}


def test_gate_power_and_false_pass_rate_on_simulated_pairs(run_factory: Callable[..., Any]) -> None:
    # Same-quality challengers rarely pass (false promotion <= alpha/2 one-sided);
    # a +25 point one nearly always does.
    false_pass = true_pass = 0
    trials = 60
    for t in range(trials):
        base = bernoulli(0.5, 60, 100 + t)
        same = bernoulli(0.5, 60, 1000 + t)
        better = bernoulli(0.75, 60, 2000 + t)
        policy = GatePolicy(n_resamples=500, seed=t)
        false_pass += gate(run_factory("target", "a", base), run_factory("target", "b", same), policy).passed
        true_pass += gate(run_factory("target", "a", base), run_factory("target", "b", better), policy).passed
    assert false_pass / trials <= 0.1
    assert true_pass / trials >= 0.6
