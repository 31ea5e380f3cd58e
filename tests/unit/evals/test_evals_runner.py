"""The runner against a fake OpenAI-compatible endpoint: results, retries, resume, endpoint failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evals.client import RetryPolicy
from evals.results import GENERATIONS_FILE, RunResult
from evals.runner import RunOptions, run_suite
from evals.suite import load_suite, load_suite_data

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002)
FIXTURE_SUITE = Path(__file__).parents[2] / "fixtures" / "evals" / "capitals_format.yaml"
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Kenya": "Nairobi", "Peru": "Lima"}


def capital_answer(model: str, messages: list[dict[str, str]]) -> str:
    question = messages[-1]["content"]
    for country, capital in CAPITALS.items():
        if country in question:
            return f"{capital}." if model == "good" else "I am not sure."
    return "?"


def opts(**kwargs: Any) -> RunOptions:
    return RunOptions(retry=FAST, n_resamples=200, **kwargs)


def test_run_records_per_example_results_and_served_by(fake_openai: Any, tmp_path: Path) -> None:
    fake_openai.answer = capital_answer
    run = run_suite(
        FIXTURE_SUITE,
        "good",
        "http://fake/v1",
        out_dir=tmp_path,
        options=opts(),
        transport=fake_openai.transport(),
        user="eval-bot",
    )
    assert run.complete and run.n_ok == 5 and run.planned == 5
    assert run.summaries["exact_match"][RunResult.ALL].value == 1.0
    assert run.summaries["exact_match"]["europe"].n == 2
    assert run.served_by() == {"good@v1": 5}
    assert {e.prediction for e in run.examples} == {f"{c}." for c in CAPITALS.values()}
    assert fake_openai.calls[0]["user"] == "eval-bot"
    assert fake_openai.headers_seen[0]["x-tuneloop-user"] == "eval-bot"
    assert fake_openai.calls[0]["temperature"] == 0.0 and fake_openai.calls[0]["max_tokens"] == 8
    loaded = RunResult.load(tmp_path / run.run_id)
    assert [e.id for e in loaded.examples] == [e.id for e in run.examples]
    assert loaded.summaries["exact_match"][RunResult.ALL].value == 1.0
    assert (tmp_path / run.run_id / "summary.json").is_file()


def test_retries_transient_errors_then_succeeds(fake_openai: Any) -> None:
    fake_openai.fail_statuses = [503, 429]
    run = run_suite(
        FIXTURE_SUITE, "m", "http://fake/v1", options=opts(concurrency=1), transport=fake_openai.transport()
    )
    assert run.complete
    assert run.examples[0].attempts == 3
    assert len(fake_openai.calls) == 5 + 2


def test_client_errors_are_not_retried(fake_openai: Any) -> None:
    fake_openai.fail_statuses = [400]
    run = run_suite(
        FIXTURE_SUITE, "m", "http://fake/v1", options=opts(concurrency=1), transport=fake_openai.transport()
    )
    assert not run.complete
    failed = [e for e in run.examples if not e.ok]
    assert (
        len(failed) == 1 and "HTTP 400" in (failed[0].error or "") and "fake 400" in (failed[0].error or "")
    )
    assert len(fake_openai.calls) == 5


def test_unknown_model_stops_early_with_the_servers_message(fake_openai: Any) -> None:
    fake_openai.reject_models = {"nope"}
    run = run_suite(
        FIXTURE_SUITE,
        "nope",
        "http://fake/v1",
        options=opts(concurrency=1, max_rejections_before_success=2),
        transport=fake_openai.transport(),
    )
    assert not run.complete
    assert run.stop_reason is not None and "model 'nope' not found" in run.stop_reason
    assert len(fake_openai.calls) == 2


def test_endpoint_down_mid_run_keeps_partial_results_and_resumes(fake_openai: Any, tmp_path: Path) -> None:
    fake_openai.answer = capital_answer
    fake_openai.down_after = 2
    partial = run_suite(
        FIXTURE_SUITE,
        "good",
        "http://fake/v1",
        out_dir=tmp_path,
        options=opts(concurrency=1, max_consecutive_unreachable=2),
        transport=fake_openai.transport(),
    )
    assert not partial.complete
    assert partial.n_ok == 2
    assert partial.stop_reason is not None and "unreachable" in partial.stop_reason
    assert "ConnectError" in partial.stop_reason
    assert partial.summaries["exact_match"][RunResult.ALL].n == 2  # partial results are scored, not lost
    saved = RunResult.load(tmp_path / partial.run_id)
    assert saved.n_ok == 2 and not saved.complete

    fake_openai.down_after = None
    resumed = run_suite(
        FIXTURE_SUITE,
        "good",
        "http://fake/v1",
        out_dir=tmp_path,
        options=opts(concurrency=1),
        transport=fake_openai.transport(),
    )
    assert resumed.complete and resumed.n_ok == 5
    # Only the 3 unanswered examples were asked again.
    assert len(fake_openai.calls) == 2 + 3
    lines = (tmp_path / resumed.run_id / GENERATIONS_FILE).read_text().splitlines()
    assert sum(1 for line in lines if json.loads(line)["error"] is None) == 5


def test_resume_reasks_when_the_prompt_changed(fake_openai: Any, tmp_path: Path) -> None:
    run_suite(
        FIXTURE_SUITE,
        "m",
        "http://fake/v1",
        out_dir=tmp_path,
        options=opts(),
        transport=fake_openai.transport(),
    )
    assert len(fake_openai.calls) == 5
    run_suite(
        FIXTURE_SUITE,
        "m",
        "http://fake/v1",
        out_dir=tmp_path,
        options=opts(),
        transport=fake_openai.transport(),
    )
    assert len(fake_openai.calls) == 5  # fully resumed: nothing asked again
    suite = load_suite(FIXTURE_SUITE).model_copy(
        update={"generation": load_suite(FIXTURE_SUITE).generation.model_copy(update={"max_tokens": 9})}
    )
    run_suite(
        suite, "m", "http://fake/v1", out_dir=tmp_path, options=opts(), transport=fake_openai.transport()
    )
    assert len(fake_openai.calls) == 10
    run_suite(
        FIXTURE_SUITE,
        "m",
        "http://fake/v1",
        out_dir=tmp_path,
        options=opts(resume=False),
        transport=fake_openai.transport(),
    )
    assert len(fake_openai.calls) == 15


def test_concurrency_is_bounded(fake_openai: Any) -> None:
    fake_openai.delay_s = 0.02
    run = run_suite(
        "general_qa", "m", "http://fake/v1", options=opts(concurrency=4), transport=fake_openai.transport()
    )
    assert run.n_ok == 24
    assert fake_openai.max_in_flight == 4


def test_k_shot_prompts_carry_train_examples(fake_openai: Any) -> None:
    run = run_suite(
        FIXTURE_SUITE, "m", "http://fake/v1", k_shot=2, options=opts(), transport=fake_openai.transport()
    )
    assert run.k_shot == 2 and run.run_id.endswith("__2shot")
    messages = fake_openai.calls[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert {messages[1]["content"], messages[3]["content"]} <= {"Madrid", "Cairo"}


def test_completions_api(fake_openai: Any, tmp_path: Path) -> None:
    suite = load_suite(FIXTURE_SUITE)
    suite = suite.model_copy(
        update={"generation": suite.generation.model_copy(update={"api": "completions"})}
    )
    fake_openai.answer = lambda model, messages: "Paris"
    run = run_suite(suite, "m", "http://fake/v1", options=opts(), transport=fake_openai.transport())
    assert run.complete
    assert "prompt" in fake_openai.calls[0] and fake_openai.calls[0]["prompt"].endswith("Assistant:")


def test_llm_judge_suite_without_judge_fails_before_any_request(fake_openai: Any, tmp_path: Path) -> None:
    from evals.errors import MetricError

    suite = load_suite("styled_replies")
    spec = suite.metrics[0].model_copy(update={"args": {}})
    suite = suite.model_copy(update={"metrics": [spec]})
    with pytest.raises(MetricError, match="needs a judge"):
        run_suite(suite, "m", "http://fake/v1", options=opts(), transport=fake_openai.transport())
    assert fake_openai.calls == []


def test_limit_and_run_inside_event_loop(fake_openai: Any) -> None:
    import asyncio

    async def inside() -> RunResult:
        return run_suite(
            FIXTURE_SUITE, "m", "http://fake/v1", limit=2, options=opts(), transport=fake_openai.transport()
        )

    run = asyncio.run(inside())
    assert run.planned == 2 and run.n_ok == 2
    assert len(load_suite_data(load_suite(FIXTURE_SUITE)).eval_examples) == 5
