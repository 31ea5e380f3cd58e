"""Reports: self-contained HTML, Markdown and JSON with the same numbers; written atomically."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from evals.ab import ab_report
from evals.datasets.request_log import SyntheticArm, write_synthetic_experiment
from evals.gate import gate
from evals.report import ab_document, eval_report, fmt, fmt_delta, write_report


def runs(run_factory: Callable[..., Any]) -> list[Any]:
    rng = np.random.default_rng(0)
    slices = ["refunds", "billing"] * 20
    champ = run_factory("target", "champ", (rng.random(40) < 0.3).astype(float).tolist(), slices=slices)
    chall = run_factory("target", "chall", (rng.random(40) < 0.8).astype(float).tolist(), slices=slices)
    return [champ, chall]


def test_eval_report_files_are_self_contained_and_consistent(
    run_factory: Callable[..., Any], tmp_path: Path
) -> None:
    champ, chall = runs(run_factory)
    from evals.runner import _summarise  # summaries as the runner computes them
    from evals.suite import load_suite

    for run in (champ, chall):
        _summarise(run, load_suite("support_target"), 200)
    decision = gate(champ, chall)
    report = eval_report([champ, chall], decision=decision)
    files = write_report(report, tmp_path / "report")
    html = files.html.read_text(encoding="utf-8")
    markdown = files.markdown.read_text(encoding="utf-8")
    data = json.loads(files.json.read_text(encoding="utf-8"))
    # Self-contained: no external scripts, styles or images; plots are inline PNGs.
    assert not re.search(r"(src|href)=\"(https?:|//)", html)
    assert html.count("data:image/png;base64,") >= 4
    assert decision.summary in html and decision.summary in markdown
    # The same numbers: every paired delta in the JSON appears, formatted, in both HTML and Markdown.
    assert data["comparisons"]
    for comparison in data["comparisons"]:
        assert fmt_delta(comparison["delta"]) in markdown
        assert fmt_delta(comparison["delta"]) in html
        assert f"[{fmt(comparison['low'])}, {fmt(comparison['high'])}]" in markdown
    assert data["gate"]["passed"] is True
    assert (files.folder / "figures" / "metric_bars.png").is_file()
    assert "![Metrics with confidence intervals](figures/metric_bars.png)" in markdown


def test_write_report_replaces_atomically(run_factory: Callable[..., Any], tmp_path: Path) -> None:
    champ, chall = runs(run_factory)
    target = tmp_path / "out"
    write_report(eval_report([champ]), target)
    (target / "stale.txt").write_text("old")
    write_report(eval_report([champ, chall]), target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_ab_document_has_the_cumulative_effect_plot(tmp_path: Path) -> None:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    write_synthetic_experiment(
        eng, "exp", [SyntheticArm("champion"), SyntheticArm("challenger", score_mean=0.8)], 600
    )
    report = ab_report("exp", eng)
    files = write_report(ab_document(report), tmp_path / "ab")
    html = files.html.read_text(encoding="utf-8")
    markdown = files.markdown.read_text(encoding="utf-8")
    assert "Cumulative effect" in html and html.count("data:image/png;base64,") == 3
    assert report.recommendation in markdown
    data = json.loads(files.json.read_text(encoding="utf-8"))
    assert data["kind"] == "ab"
    score = next(o for o in data["comparisons"][0]["outcomes"] if o["outcome"] == "score:reference")
    assert fmt_delta(score["diff"]) in markdown
