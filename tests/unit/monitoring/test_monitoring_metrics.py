"""LoopMetrics: drift, scores, loop state and trainings in the Prometheus text format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.drift import DriftReport
from monitoring.metrics import LoopMetrics
from monitoring.scorers import ScoreAggregate, ScoreSummary


def samples(metrics: LoopMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_drift_and_trainings() -> None:
    m = LoopMetrics()
    m.observe_drift(
        DriftReport(
            detector="mmd",
            kind="input",
            statistic=0.02,
            threshold=0.005,
            p_value=0.003,
            n_ref=500,
            n_live=400,
            drifted=True,
            subject="support@v1",
        )
    )
    m.observe_drift(
        DriftReport(
            detector="adwin",
            kind="quality",
            statistic=0.0,
            threshold=0.1,
            p_value=None,
            n_ref=0,
            n_live=100,
            drifted=False,
        )
    )
    m.training("started")
    m.training("started")
    m.training("failed")
    s = samples(m)
    key = (("detector", "mmd"), ("kind", "input"), ("subject", "support@v1"))
    assert s[("tuneloop_drift_statistic", key)] == 0.02
    assert s[("tuneloop_drift_threshold", key)] == 0.005
    assert s[("tuneloop_drift_p_value", key)] == 0.003
    assert s[("tuneloop_drift_detected", key)] == 1.0
    q = (("detector", "adwin"), ("kind", "quality"), ("subject", "-"))
    assert s[("tuneloop_drift_p_value", q)] != s[("tuneloop_drift_p_value", q)]  # NaN
    assert s[("tuneloop_trainings_total", (("outcome", "started"),))] == 2
    assert s[("tuneloop_trainings_total", (("outcome", "failed"),))] == 1
    assert s[("tuneloop_trainings_total", (("outcome", "passed"),))] == 0
    with pytest.raises(ValueError, match="training outcome"):
        m.training("exploded")  # type: ignore[arg-type]


def test_scores_per_version() -> None:
    m = LoopMetrics()
    agg = ScoreAggregate()
    for v in (1.0, 0.0, 1.0, 1.0):
        agg.add(v)
    summary = ScoreSummary(
        since=None,
        until=datetime(2026, 1, 1, tzinfo=UTC),
        written={"reference": 4},
        per_version={"support@abc": {"reference": agg}, "base@base": {"empty": agg}},
    )
    m.observe_scores(summary)
    s = samples(m)
    assert (
        s[
            (
                "tuneloop_score_mean",
                (("scorer", "reference"), ("served_name", "support"), ("served_version", "abc")),
            )
        ]
        == 0.75
    )
    assert (
        s[
            (
                "tuneloop_score_count",
                (("scorer", "empty"), ("served_name", "base"), ("served_version", "base")),
            )
        ]
        == 4
    )
    assert s[("tuneloop_scores_written_total", (("scorer", "reference"),))] == 4


def test_loop_state_enum_and_time_in_state() -> None:
    now = [100.0]
    m = LoopMetrics(clock=lambda: now[0])
    assert m.state == "watching"
    now[0] = 130.0
    m.set_state("training")
    now[0] = 145.0
    s = samples(m)
    assert s[("tuneloop_loop_state", (("tuneloop_loop_state", "training"),))] == 1.0
    assert s[("tuneloop_loop_state", (("tuneloop_loop_state", "watching"),))] == 0.0
    assert s[("tuneloop_loop_time_in_state_seconds", ())] == 15.0
    assert s[("tuneloop_loop_state_seconds_total", (("state", "watching"),))] == 30.0
    m.set_state("training")  # re-entering keeps the clock
    assert samples(m)[("tuneloop_loop_time_in_state_seconds", ())] == 15.0
    with pytest.raises(ValueError, match="unknown loop state 'dancing'"):
        m.set_state("dancing")


def test_registries_are_independent() -> None:
    a, b = LoopMetrics(), LoopMetrics(states=["idle", "busy"])
    a.training("started")
    assert samples(b)[("tuneloop_trainings_total", (("outcome", "started"),))] == 0
    assert b.state == "idle"
