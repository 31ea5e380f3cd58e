"""A/B statistics from a synthetic request log in SQLite (planted effects, SRM, one arm, no traffic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from common.log_schema import create_log_tables, feedback_table, requests_table
from evals.ab import ab_report, list_experiments, load_experiment
from evals.datasets.request_log import SyntheticArm, write_synthetic_experiment
from evals.errors import ExperimentDataError


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    write_synthetic_experiment(
        eng,
        "better",
        [SyntheticArm("champion"), SyntheticArm("challenger", score_mean=0.78)],
        1200,
        seed=1,
        shadow_fraction=0.1,
    )
    write_synthetic_experiment(
        eng, "same", [SyntheticArm("champion"), SyntheticArm("challenger")], 1200, seed=2
    )
    write_synthetic_experiment(
        eng,
        "skewed",
        [SyntheticArm("champion", weight=0.62), SyntheticArm("challenger", weight=0.38)],
        2000,
        seed=3,
    )
    write_synthetic_experiment(eng, "solo", [SyntheticArm("champion")], 40, seed=4)
    return eng


def test_planted_score_improvement_is_detected(engine: sa.Engine) -> None:
    report = ab_report("better", engine)
    assert report.control == "champion"
    assert report.primary == "score:reference"
    score = next(o for o in report.comparisons[0].outcomes if o.outcome == "score:reference")
    assert score.diff == pytest.approx(0.08, abs=0.02)
    assert score.sequential_rejected and score.verdict == "treatment better"
    assert score.sequential_low > 0
    assert "safe to stop" in report.recommendation
    assert not report.problems
    # Shadow copies are not traffic.
    assert sum(a.requests for a in report.arms) == 1200


def test_aa_experiment_shows_no_quality_difference(engine: sa.Engine) -> None:
    report = ab_report("same", engine)
    score = next(o for o in report.comparisons[0].outcomes if o.outcome == "score:reference")
    assert not score.sequential_rejected
    assert "keep running" in report.recommendation
    assert report.comparisons[0].sample_size is not None
    assert report.srm is not None and not report.srm["mismatch"]


def test_sample_ratio_mismatch_is_flagged(engine: sa.Engine) -> None:
    report = ab_report("skewed", engine)
    assert report.srm is not None and report.srm["mismatch"]
    assert any("sample ratio mismatch" in p for p in report.problems)
    assert report.recommendation.startswith("Stop and fix assignment")
    weighted = ab_report("skewed", engine, weights={"champion": 0.62, "challenger": 0.38})
    assert weighted.srm is not None and not weighted.srm["mismatch"]


def test_one_arm_and_no_traffic(engine: sa.Engine) -> None:
    solo = ab_report("solo", engine)
    assert solo.comparisons == [] and len(solo.arms) == 1
    assert "only arm 'champion' has traffic (40 requests)" in solo.problems[0]
    with pytest.raises(ExperimentDataError, match=r"'nothing' has no requests.*better \(1\d\d\d\)"):
        ab_report("nothing", engine)


def test_missing_request_log_table(tmp_path: Path) -> None:
    with pytest.raises(ExperimentDataError, match="no `requests` table"):
        ab_report("x", f"sqlite:///{tmp_path / 'empty.db'}")


def test_per_arm_numbers_from_hand_made_rows(tmp_path: Path) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'hand.db'}")
    create_log_tables(eng)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(10):
        arm = "a" if i % 2 == 0 else "b"
        rows.append(
            {
                "id": f"r{i}",
                "created_at": t0 + timedelta(seconds=i),
                "endpoint": "chat.completions",
                "model_requested": "m",
                "served_name": "m",
                "served_version": None,
                "experiment": "hand",
                "arm": arm,
                "prompt": "[]",
                "status_code": 500 if i == 9 else 200,
                "error": None,
                "stream": False,
                "latency_ms": 100.0 * (i + 1),
                "completion_tokens": 10 + i,
            }
        )

    def fb(request_id: str, days: int, thumbs: int, rating: float | None = None) -> dict[str, object]:
        return {
            "request_id": request_id,
            "created_at": t0 + timedelta(days),
            "thumbs": thumbs,
            "rating": rating,
        }

    feedback = [fb("r0", 0, -1), fb("r0", 1, 1), fb("r2", 0, -1, 0.2), fb("r1", 0, 1, 1.0)]
    with eng.begin() as conn:
        conn.execute(sa.insert(requests_table), rows)
        conn.execute(sa.insert(feedback_table), feedback)
    data = load_experiment(eng, "hand")
    assert data.arm_names() == ["a", "b"]
    report = ab_report("hand", eng, control="a", burn_in=2)
    a, b = report.arms
    assert (a.arm, a.requests, b.requests) == ("a", 5, 5)
    assert b.values["error_rate"] == pytest.approx(0.2)
    assert a.values["feedback_rate"] == pytest.approx(2 / 5)
    assert a.values["thumbs_up_rate"] == pytest.approx(0.5)  # r0's latest thumb is up, r2's is down
    assert a.values["rating"] == pytest.approx(0.2)
    assert a.values["latency_ms"] == pytest.approx(np.mean([100, 300, 500, 700, 900]))
    assert b.values["latency_ms"] == pytest.approx(np.mean([200, 400, 600, 800]))  # failed request excluded
    assert list_experiments(eng) == {"hand": 10}
    since = load_experiment(eng, "hand", since=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC))
    assert len(since.request_ids) == 5


def test_report_json_is_strict_and_complete(engine: sa.Engine) -> None:
    import json

    report = ab_report("better", engine)
    raw = json.loads(report.to_json())
    assert raw["primary"] == "score:reference"
    scored = sum(arm["counts"]["score:reference"] for arm in raw["arms"])
    assert raw["paths"][0]["n_total"][-1] == scored > 1100
    assert "distributions" not in raw
