"""Metrics on hand-computed examples, computed through the shipped `evaluate` modules."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from evals.errors import MetricError
from evals.example import Example
from evals.metrics import (
    JudgeEndpoint,
    Metric,
    MetricInput,
    MetricScores,
    build_metric,
    get_metric_class,
    load_module,
    mean_rows,
    metric_kinds,
    pass_at_k,
    register_metric,
)
from evals.metrics.sandbox import SandboxLimits, run_python
from evals.tasks import extract_code, extract_label


def score(
    name: str,
    predictions: list[str],
    references: list[str | None],
    *,
    args: dict[str, Any] | None = None,
    labels: list[str] | None = None,
    fields: list[dict[str, Any]] | None = None,
    judge: JudgeEndpoint | None = None,
) -> MetricScores:
    examples = [
        Example(str(i), (fields or [{}] * len(references))[i], ref) for i, ref in enumerate(references)
    ]
    inputs = MetricInput(
        predictions, examples, [f"prompt {i}" for i in range(len(predictions))], labels, judge
    )
    return asyncio.run(build_metric(name, args=args).score(inputs))


def test_builtin_kinds_registered_and_modules_load_offline() -> None:
    assert {
        "exact_match",
        "contains_answer",
        "rouge1",
        "rouge2",
        "rougeL",
        "bleu",
        "chrf",
        "accuracy",
        "f1",
        "pass_at_1",
        "llm_judge",
    } <= set(metric_kinds())
    module = load_module("exact_match")
    assert module.compute(predictions=["The Paris."], references=[["paris"]])["exact_match"] == 1.0


def test_exact_match_hand_computed() -> None:
    result = score(
        "exact_match", ["Paris", "the Paris!", "Paris, France", "rome"], ["paris", "Paris", "Paris", "Rome"]
    )
    assert result.per_example == [1.0, 1.0, 0.0, 1.0]
    assert result.value == 0.75
    strict = score("exact_match", ["paris"], ["Paris"], args={"ignore_case": False})
    assert strict.value == 0.0


def test_exact_match_accepts_aliases_column() -> None:
    result = score("exact_match", ["CO2"], ["carbon dioxide"], fields=[{"aliases": ["CO2"]}])
    assert result.value == 1.0


def test_contains_answer_whole_words() -> None:
    result = score(
        "contains_answer",
        ["It is Paris, of course.", "Parisian food", "30 days to return", ""],
        ["Paris", "Paris", "30 days", "x"],
    )
    assert result.per_example == [1.0, 0.0, 1.0, 0.0]
    assert result.stats.tolist() == [[1, 1], [0, 1], [1, 1], [0, 1]]
    # Punctuation in the key fact is normalised the same way on both sides.
    assert score("contains_answer", ["It costs $4.99 a month"], ["$4.99"]).value == 1.0


def test_rouge_matches_rouge_score_package() -> None:
    preds = ["the cat sat on the mat", "a quick brown fox", "nothing in common"]
    refs = ["the cat is on the mat", "the quick brown fox jumps", "completely different words"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for kind in ("rouge1", "rougeL"):
        result = score(kind, preds, refs)
        expected = [scorer.score(r, p)[kind].fmeasure for p, r in zip(preds, refs, strict=True)]
        assert result.per_example == pytest.approx(expected)
        assert result.value == pytest.approx(np.mean(expected))
    # Hand check: "the cat sat on the mat" vs "the cat is on the mat": 5 of 6 unigrams match -> F = 5/6.
    assert score("rouge1", preds[:1], refs[:1]).value == pytest.approx(5 / 6)


def test_bleu_equals_sacrebleu_and_subsets_are_exact() -> None:
    preds = ["the cat sat on the mat", "a quick brown fox jumps", "hello there world", "it is raining today"]
    refs = ["the cat sat on the mat", "the quick brown fox jumps", "hello world", "it rains today"]
    result = score("bleu", preds, refs)
    assert result.value == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    bleu = get_metric_class("bleu")
    subset = [1, 3]
    assert bleu.value_of(result.stats[subset]) == pytest.approx(
        sacrebleu.corpus_bleu([preds[i] for i in subset], [[refs[i] for i in subset]]).score
    )
    # A perfect translation scores 100.
    assert score("bleu", ["the cat sat on the mat"], ["the cat sat on the mat"]).value == pytest.approx(100.0)


def test_chrf_equals_sacrebleu_for_chrf_and_chrf_plus_plus() -> None:
    preds = ["Bonjour le monde", "Le chat dort", "Merci beaucoup"]
    refs = ["Bonjour tout le monde", "Le chat dort sur le lit", "Merci beaucoup"]
    assert score("chrf", preds, refs).value == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    plus = score("chrf", preds, refs, args={"word_order": 2})
    assert plus.value == pytest.approx(sacrebleu.corpus_chrf(preds, [refs], word_order=2).score)
    assert get_metric_class("chrf").value_of(plus.stats) == pytest.approx(plus.value)


def test_accuracy_and_macro_f1_hand_computed() -> None:
    labels = ["pos", "neg", "neu"]
    preds, refs = ["pos", "pos", "neg", "garbage"], ["pos", "neg", "neg", "neu"]
    assert score("accuracy", preds, refs, labels=labels).value == 0.5
    f1 = score("f1", preds, refs, labels=labels)
    # pos: tp1 fp1 fn0 -> 2/3; neg: tp1 fp0 fn1 -> 2/3; neu: tp0 fp0 fn1 -> 0; macro = 4/9.
    assert f1.value == pytest.approx(4 / 9)
    assert get_metric_class("f1").value_of(f1.stats) == pytest.approx(4 / 9)


def test_macro_f1_matches_sklearn_when_available() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    refs = list(rng.choice(labels, 200))
    preds = [r if rng.random() < 0.6 else str(rng.choice(labels)) for r in refs]
    ours = score("f1", preds, refs, labels=labels).value
    assert ours == pytest.approx(metrics.f1_score(refs, preds, average="macro"))


def test_classification_rejects_unknown_reference_label() -> None:
    with pytest.raises(ValueError, match="not one of the declared labels"):
        score("accuracy", ["a"], ["zzz"], labels=["a", "b"])


def test_label_and_code_extraction() -> None:
    labels = ["refunds", "shipping", "account", "billing"]
    assert extract_label("The intent is Shipping.", labels) == "shipping"
    assert extract_label("billing, not refunds", labels) == "billing"
    assert extract_label("no idea", labels) == "no idea"
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1"
    assert extract_code("def g(): pass") == "def g(): pass"


def test_sandbox_outcomes() -> None:
    limits = SandboxLimits(timeout_s=3, memory_mb=256)
    assert run_python("assert 1 + 1 == 2", limits).status == "passed"
    assert run_python("assert 1 + 1 == 3", limits).status == "failed"
    assert run_python("while True:\n    pass", SandboxLimits(timeout_s=1.5)).status == "timeout"
    assert run_python("x = bytearray(1024 * 1024 * 1024)", limits).status == "memory"
    network = run_python("import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)", limits)
    assert network.status == "blocked"
    escape = run_python("open('/tmp/tuneloop-sandbox-escape.txt', 'w').write('x')", limits)
    assert escape.status == "blocked"
    spawn = run_python("import subprocess\nsubprocess.run(['true'])", limits)
    assert spawn.status == "blocked"
    # Writing inside its own temp dir is fine.
    assert run_python("open('scratch.txt', 'w').write('ok')", limits).status == "passed"


def test_pass_at_1_runs_tests_against_generated_code() -> None:
    programs = [
        "def add(a, b):\n    return a + b",
        "def add(a, b):\n    return a - b",
        "def add(a, b) return",
    ]
    tests = ["assert add(2, 3) == 5"] * 3
    result = score("pass_at_1", programs, tests, args={"timeout_s": 5})
    assert result.per_example == [1.0, 0.0, 0.0]
    assert result.value == pytest.approx(1 / 3)
    assert [d["status"] for d in result.details] == ["passed", "failed", "failed"]


def test_pass_at_k_estimator() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 4, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)


def test_llm_judge_module_parses_scores() -> None:
    module = load_module("llm_judge")
    out = module.compute(
        predictions=["Good. Score: 5", "score: 3/5", "Score: **1**", "I refuse", "Score: 9"],
        references=[""] * 5,
        scale_max=5,
    )
    assert out["scores"] == [1.0, 0.5, 0.0, None, None]
    assert out["stats"][3] == [0.0, 0.0]
    assert out["llm_judge"] == pytest.approx(0.5)


def test_llm_judge_metric_calls_judge_model(fake_openai: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from evals import client as client_module

    fake_openai.answer = lambda model, messages: (
        "Clear. Score: 4" if "a helpful answer" in messages[-1]["content"] else "??"
    )
    original = client_module.ChatEndpoint.__init__

    def with_fake(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["transport"] = fake_openai.transport()
        original(self, *args, **kwargs)

    monkeypatch.setattr(client_module.ChatEndpoint, "__init__", with_fake)
    result = score(
        "llm_judge",
        ["a helpful answer", "rubbish"],
        [None, None],
        judge=JudgeEndpoint(base_url="http://judge/v1", model="judge-model"),
    )
    assert result.per_example == [0.75, None]
    assert result.value == 0.75
    assert fake_openai.calls[0]["model"] == "judge-model"
    assert "Rubric" in fake_openai.calls[0]["messages"][-1]["content"]
    assert isinstance(httpx, object)


def test_llm_judge_without_judge_model_is_a_clear_error() -> None:
    metric = build_metric("llm_judge")
    with pytest.raises(MetricError, match="needs a judge"):
        metric.judge_endpoint(
            MetricInput([], [], [], judge=JudgeEndpoint(base_url="http://x/v1", model=None))
        )


def test_unknown_metric_and_unknown_argument_are_clear_errors() -> None:
    with pytest.raises(MetricError, match="unknown metric 'bleurt'.*known: accuracy"):
        build_metric("bleurt")
    with pytest.raises(MetricError, match="unknown argument 'stemmer'.*allowed: use_stemmer"):
        build_metric("rougeL", args={"stemmer": True})


def test_register_custom_metric_kind() -> None:
    @register_metric("answer_length_test")
    class AnswerLength(Metric):
        module = "none"
        higher_is_better: ClassVar[bool] = False

        def _score(self, inputs: MetricInput) -> MetricScores:
            values: list[float | None] = [float(len(p)) for p in inputs.predictions]
            rows = mean_rows(values)
            return MetricScores(values, rows, self.value_of(rows))

    result = score("answer_length_test", ["ab", "abcd"], ["x", "y"])
    assert result.value == 3.0
    assert get_metric_class("answer_length_test") is AnswerLength
    with pytest.raises(ValueError, match="already registered"):
        register_metric("answer_length_test")(AnswerLength)
