"""The demo report shows the canary's steps: one row per step with its weight, scored requests and means
per arm, the always-valid interval, p-value and e-value, and the decision (from the loop's record)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from common.log_schema import create_log_tables
from tuneloop.demo import canary_step_rows
from tuneloop.demo_report import write_demo_report

CANARY: dict[str, Any] = {
    "weights": [0.25, 0.5],
    "steps": [
        {
            "step": 1,
            "weight": 0.25,
            "experiment": "support-canary-abc123",
            "decision": "advance",
            "reason": "budget",
            "n": {"champion": 36, "challenger": 12},
            "mean": {"champion": 0.417, "challenger": 0.75},
            "estimate": 0.333,
            "ci_low": -0.41,
            "ci_high": 1.0,
            "p_value": 0.62,
            "e_value": 1.6,
        },
        {
            "step": 2,
            "weight": 0.5,
            "experiment": "support-canary-abc123-s2",
            "decision": "promote",
            "reason": "non_inferior",
            "n": {"champion": 14, "challenger": 15},
            "mean": {"champion": 0.43, "challenger": 0.8},
            "estimate": 0.35,
            "ci_low": -0.12,
            "ci_high": 0.8,
            "p_value": 0.0004,
            "e_value": 2500.0,
        },
    ],
}


def test_canary_step_rows_flatten_the_loop_record() -> None:
    rows = canary_step_rows(CANARY)
    assert [(r["step"], r["weight"], r["decision"], r["reason"]) for r in rows] == [
        (1, 0.25, "advance", "budget"),
        (2, 0.5, "promote", "non_inferior"),
    ]
    assert rows[0]["n_challenger"] == 12 and rows[1]["mean_champion"] == 0.43
    running = canary_step_rows({"steps": [{"step": 1, "weight": 0.05}]})
    assert running[0]["decision"] == "running" and running[0]["n_champion"] is None
    assert canary_step_rows({}) == []


def test_the_report_has_a_canary_step_table(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    create_log_tables(sa.create_engine(db))
    spec = SimpleNamespace(
        adapter="support",
        quality_scorer="reference",
        slice_key="intent",
        policy=SimpleNamespace(input_drift=None),
    )
    controller = SimpleNamespace(spec=spec, store=SimpleNamespace(events=lambda: []))
    summary = {
        "outcome": "promoted",
        "traffic": {"ok": 200, "failed": 0},
        "canary_steps": canary_step_rows(CANARY),
    }
    html = write_demo_report(tmp_path / "report.html", summary, db, controller).read_text(encoding="utf-8")
    assert "<h2>Canary steps</h2>" in html
    assert "<td>25%</td><td>36 / 12</td><td>0.417</td><td>0.750</td>" in html
    assert "+0.350 [-0.120, +0.800]" in html and "<0.001" in html and "promote (non_inferior)" in html
    empty = write_demo_report(tmp_path / "r2.html", {**summary, "canary_steps": []}, db, controller)
    assert "no canary steps recorded" in empty.read_text(encoding="utf-8")
