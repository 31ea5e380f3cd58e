"""Trigger policy: YAML validation and the pure decide() on edge cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.drift import DriftReport
from monitoring.errors import PolicyError
from monitoring.policy import (
    LoopState,
    Outcome,
    TrainingRecord,
    TriggerPolicy,
    decide,
    load_policy,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICIES = Path(__file__).resolve().parents[3] / "monitoring" / "policies"


def input_report(
    p: float = 0.001, n_live: int = 500, n_ref: int = 500, statistic: float = 0.01, detector: str = "mmd"
) -> DriftReport:
    return DriftReport(
        detector=detector,
        kind="input",
        statistic=statistic,
        threshold=0.004,
        p_value=p,
        n_ref=n_ref,
        n_live=n_live,
        drifted=p <= 0.01,
        subject="support@v1",
    )


def quality_report(
    drop: float = 0.3, p: float = 1e-5, n_live: int = 200, scorer: str = "reference"
) -> DriftReport:
    return DriftReport(
        detector="adwin",
        kind="quality",
        statistic=drop,
        threshold=0.05,
        p_value=p,
        n_ref=300,
        n_live=n_live,
        drifted=True,
        subject=f"support@v1:{scorer}",
        evidence={"alarms": [320]},
    )


def policy(**kw: object) -> TriggerPolicy:
    return TriggerPolicy.model_validate(kw)


def test_fires_on_input_drift() -> None:
    d = decide(policy(), LoopState(), [input_report()], NOW)
    assert d.fire and d.outcome == Outcome.FIRE and d.tripped == ["mmd[support@v1]"]
    assert "p=0.001" in d.reasons[0]


def test_fires_on_quality_drop_and_respects_scorer_filter() -> None:
    assert decide(policy(), LoopState(), [quality_report()], NOW).fire
    only_feedback = policy(quality_drift={"scorers": ["feedback"]})
    assert (
        decide(only_feedback, LoopState(), [quality_report(scorer="reference")], NOW).outcome
        == Outcome.NO_DRIFT
    )
    assert decide(only_feedback, LoopState(), [quality_report(scorer="feedback")], NOW).fire


def test_no_drift_below_thresholds() -> None:
    d = decide(policy(), LoopState(), [input_report(p=0.2), quality_report(drop=0.02)], NOW)
    assert not d.fire and d.outcome == Outcome.NO_DRIFT and d.tripped == []
    assert decide(policy(), LoopState(), [], NOW).outcome == Outcome.NO_DRIFT


def test_too_few_samples() -> None:
    d = decide(policy(), LoopState(), [input_report(n_live=50), quality_report(n_live=10)], NOW)
    assert not d.fire and d.outcome == Outcome.INSUFFICIENT_SAMPLES
    assert any("50 live" in r for r in d.reasons) and any("10 scores" in r for r in d.reasons)
    # one sufficient report still fires
    assert decide(policy(), LoopState(), [input_report(n_live=50), quality_report()], NOW).fire


def test_training_in_progress_blocks() -> None:
    d = decide(policy(), LoopState(training_in_progress=True), [input_report()], NOW)
    assert not d.fire and d.outcome == Outcome.TRAINING_IN_PROGRESS


def test_cooldown_boundaries() -> None:
    p = policy(cooldown_minutes=60)
    inside = LoopState(last_triggered_at=NOW - timedelta(minutes=59))
    d = decide(p, inside, [input_report()], NOW)
    assert d.outcome == Outcome.COOLDOWN and d.retry_after == NOW + timedelta(minutes=1)
    at_end = LoopState(last_triggered_at=NOW - timedelta(minutes=60))
    assert decide(p, at_end, [input_report()], NOW).fire


def test_daily_limit_counts_a_rolling_24h() -> None:
    p = policy(max_trainings_per_day=2, cooldown_minutes=0)
    runs = [TrainingRecord(started_at=NOW - timedelta(hours=h), minutes=5) for h in (1, 5, 30)]
    d = decide(p, LoopState(trainings=runs), [input_report()], NOW)
    assert d.outcome == Outcome.DAILY_LIMIT and d.retry_after == NOW - timedelta(hours=5) + timedelta(
        hours=24
    )
    assert decide(p, LoopState(trainings=runs[1:]), [input_report()], NOW).fire
    zero = policy(max_trainings_per_day=0)
    assert decide(zero, LoopState(), [input_report()], NOW).outcome == Outcome.DAILY_LIMIT


def test_budget_exhausted_counts_running_trainings_at_the_estimate() -> None:
    p = policy(
        cooldown_minutes=0, budget={"max_training_minutes_per_day": 60, "estimated_training_minutes": 20}
    )
    used = [
        TrainingRecord(started_at=NOW - timedelta(hours=2), minutes=30),
        TrainingRecord(started_at=NOW - timedelta(hours=1)),
    ]  # still running: counts 20
    d = decide(p, LoopState(trainings=used), [input_report()], NOW)
    assert d.outcome == Outcome.BUDGET_EXHAUSTED and "50 training minutes" in d.reasons[-1]
    assert d.retry_after == NOW - timedelta(hours=2) + timedelta(hours=24)
    fits = [TrainingRecord(started_at=NOW - timedelta(hours=2), minutes=40)]
    assert decide(p, LoopState(trainings=fits), [input_report()], NOW).fire


def test_manual_approval_and_dry_run() -> None:
    p = policy(require_approval=True)
    d = decide(p, LoopState(), [input_report()], NOW)
    assert not d.fire and d.outcome == Outcome.AWAITING_APPROVAL and d.would_fire
    assert decide(p, LoopState(approved=True), [input_report()], NOW).fire
    dry = policy(dry_run=True)
    d = decide(dry, LoopState(), [input_report()], NOW)
    assert not d.fire and d.outcome == Outcome.DRY_RUN and d.would_fire
    # a dry run still reports why nothing would happen
    assert decide(dry, LoopState(), [input_report(p=0.5)], NOW).outcome == Outcome.NO_DRIFT


def test_require_all_and_min_statistic() -> None:
    both = policy(require_all=True)
    d = decide(both, LoopState(), [input_report()], NOW)
    assert not d.fire and "requires both" in d.reasons[-1]
    assert decide(both, LoopState(), [input_report(), quality_report()], NOW).fire
    floor = policy(input_drift={"min_statistic": {"mmd": 0.05}})
    assert not decide(floor, LoopState(), [input_report(statistic=0.01)], NOW).fire
    assert decide(floor, LoopState(), [input_report(statistic=0.06)], NOW).fire


def test_detector_verdict_when_no_p_threshold_and_unknown_detectors_ignored() -> None:
    p = policy(input_drift={"max_p_value": None})
    report = input_report(p=0.5)
    report.drifted = True
    assert decide(p, LoopState(), [report], NOW).fire
    assert not decide(policy(), LoopState(), [input_report(detector="classifier")], NOW).fire


def test_decide_is_pure_and_rejects_naive_now() -> None:
    state = LoopState(trainings=[TrainingRecord(started_at=NOW - timedelta(hours=1), minutes=5)])
    reports = [input_report()]
    assert decide(policy(), state, reports, NOW) == decide(policy(), state, reports, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(policy(), state, reports, datetime(2026, 5, 1))
    assert TriggerPolicy().decide(state, reports, NOW).to_dict()["outcome"] == "fire"


def test_example_policies_load() -> None:
    names = {load_policy(path).name for path in POLICIES.glob("*.yaml")}
    assert names >= {"default", "demo", "production", "dry-run"}
    assert load_policy(POLICIES / "production.yaml").require_approval
    assert load_policy(POLICIES / "dry_run.yaml").dry_run


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cooldown_minuts: 5\n", "cooldown_minuts: Extra inputs are not permitted"),
        ("cooldown_minutes: -1\n", "cooldown_minutes"),
        ("input_drift:\n  max_p_value: 2\n", "input_drift.max_p_value"),
        ("input_drift: null\nquality_drift: null\n", "needs input_drift or quality_drift"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_malformed_policies_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message.replace("[", r"\[")):
        load_policy(path)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")
