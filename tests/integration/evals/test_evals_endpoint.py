"""Evals against a real served model (SmolLM2-135M-Instruct on vLLM): runner, k-shot, judge, code, gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals import eval_report, run_baselines, run_suite, write_report
from evals.gate import GatePolicy, gate
from evals.runner import RunOptions
from evals.suite import load_suite

pytestmark = pytest.mark.integration
OPTIONS = RunOptions(concurrency=4, n_resamples=300)


def test_run_suite_against_served_model(eval_endpoint: tuple[str, str, bool], tmp_path: Path) -> None:
    url, model, ours = eval_endpoint
    run = run_suite("general_qa", model, url, limit=8, out_dir=tmp_path, options=OPTIONS)
    assert run.complete, run.error_counts()
    assert run.n_ok == 8
    assert all(e.latency_ms and e.latency_ms > 0 for e in run.examples)
    assert all((e.completion_tokens or 0) > 0 for e in run.examples)
    assert all(e.model == model for e in run.examples)
    if ours:  # tuneloop names what served each answer
        assert all(e.served_by and e.served_by.startswith(model) for e in run.examples), run.served_by()
    # 8 geography questions: even a 135M model knows some capitals.
    assert run.summaries["contains_answer"]["__all__"].value > 0
    assert (tmp_path / run.run_id / "results.jsonl").is_file()


def test_k_shot_baseline_report_and_gate_on_identical_models(
    eval_endpoint: tuple[str, str, bool], tmp_path: Path
) -> None:
    url, model, _ = eval_endpoint
    runs = run_baselines(
        "intents",
        base_model=model,
        model=model,
        base_url=url,
        k_shot=3,
        limit=8,
        out_dir=tmp_path,
        options=OPTIONS,
    )
    assert [r.k_shot for r in runs] == [0, 3, 0]
    assert all(r.complete for r in runs)
    files = write_report(eval_report(runs, title="k-shot baseline"), tmp_path / "report")
    data = json.loads(files.json.read_text())
    assert [r["label"] for r in data["runs"]] == [model, f"{model} (3-shot)", f"{model} #2"]
    # The same model is no improvement over itself: the gate must not promote it.
    decision = gate(runs[0], runs[2], GatePolicy(target=("intents",), min_pairs=5))
    assert not decision.passed


def test_llm_judge_uses_a_served_model(eval_endpoint: tuple[str, str, bool], tmp_path: Path) -> None:
    url, model, _ = eval_endpoint
    suite = load_suite("styled_replies")
    judge = suite.metrics[0].model_copy(update={"args": {**suite.metrics[0].args, "max_tokens": 48}})
    generation = suite.generation.model_copy(update={"max_tokens": 48})
    suite = suite.model_copy(update={"metrics": [judge], "generation": generation})
    run = run_suite(suite, model, url, limit=2, judge_model=model, out_dir=tmp_path, options=OPTIONS)
    assert run.complete
    details = [e.metrics["style_judge"].detail for e in run.examples]
    assert all(d and d["judge_model"] == model and d["judge_reply"] for d in details)


def test_code_suite_runs_generated_code_in_the_sandbox(
    eval_endpoint: tuple[str, str, bool], tmp_path: Path
) -> None:
    url, model, _ = eval_endpoint
    run = run_suite("code_functions", model, url, limit=3, out_dir=tmp_path, options=OPTIONS)
    assert run.complete
    statuses = {e.metrics["pass_at_1"].detail["status"] for e in run.examples}  # type: ignore[index]
    assert statuses <= {"passed", "failed", "timeout", "memory", "blocked"}
