"""Scorers on hand-made request rows: feedback, reference, heuristics, language mismatch, registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from evals.metrics.answers import contains_answer
from monitoring.errors import ScorerConfigError
from monitoring.scorers import (
    EmptyScorer,
    FeedbackScorer,
    LanguageMismatchScorer,
    LengthOutlierScorer,
    ReferenceScorer,
    RefusalScorer,
    RepetitionScorer,
    TruncationScorer,
    build_scorer,
    build_scorers,
    detect_language,
    scorer_kinds,
)
from monitoring.scorers.text import token_f1
from monitoring.store import FeedbackEntry, LoggedRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def req(
    response: str | None,
    *,
    prompt: str = "How do I get a refund for my order?",
    rid: str = "r1",
    finish_reason: str | None = "stop",
    tags: dict[str, Any] | None = None,
    chat: bool = True,
    served_name: str = "base",
) -> LoggedRequest:
    stored = json.dumps([{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}])
    return LoggedRequest(
        id=rid,
        created_at=T0,
        endpoint="chat.completions" if chat else "completions",
        served_name=served_name,
        served_version=None,
        prompt=stored if chat else prompt,
        response=response,
        finish_reason=finish_reason,
        tags=tags or {},
    )


def fb(i: int = 1, **kw: Any) -> FeedbackEntry:
    return FeedbackEntry(id=i, request_id="r1", created_at=T0, **kw)


def test_registry_has_every_builtin_kind() -> None:
    assert set(scorer_kinds()) >= {
        "feedback",
        "reference",
        "empty",
        "refusal",
        "repetition",
        "truncation",
        "language_mismatch",
        "length_outlier",
        "llm_judge",
    }


def test_build_scorer_from_config_and_errors() -> None:
    scorer = build_scorer({"kind": "reference", "name": "ref_contains", "metric": "contains_answer"})
    assert (
        isinstance(scorer, ReferenceScorer)
        and scorer.name == "ref_contains"
        and scorer.metric == "contains_answer"
    )
    with pytest.raises(ScorerConfigError, match="unknown scorer kind 'nope'"):
        build_scorer("nope")
    with pytest.raises(ScorerConfigError, match="unknown option 'colour'"):
        build_scorer({"kind": "empty", "colour": "red"})
    with pytest.raises(ScorerConfigError, match="needs a 'kind'"):
        build_scorer({"name": "x"})
    with pytest.raises(ScorerConfigError, match="metric must be"):
        build_scorer({"kind": "reference", "metric": "bleu"})
    with pytest.raises(ScorerConfigError, match="two scorers are named 'empty'"):
        build_scorers(["empty", "empty"])


def test_messages_and_user_text() -> None:
    r = req("x", prompt="where is my parcel?")
    assert r.user_text == "where is my parcel?"
    assert r.messages[0]["role"] == "system"
    assert req("x", prompt="plain text prompt", chat=False).user_text == "plain text prompt"
    parts = LoggedRequest(
        id="p",
        created_at=T0,
        endpoint="chat.completions",
        served_name="b",
        served_version=None,
        prompt=json.dumps([{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]),
        response="",
    )
    assert parts.user_text == "hi there"
    assert r.version_key == "base@base"


# ----------------------------------------------------------------------------- feedback


def test_feedback_rating_thumbs_correction() -> None:
    s = FeedbackScorer()
    assert s.score(req("a"), []) is None
    assert s.score(req("a"), [fb(rating=0.8)]).score == pytest.approx(0.8)  # type: ignore[union-attr]
    assert s.score(req("a"), [fb(thumbs=1)]).score == 1.0  # type: ignore[union-attr]
    assert s.score(req("a"), [fb(thumbs=-1)]).score == 0.0  # type: ignore[union-attr]
    result = s.score(req("a"), [fb(1, thumbs=1), fb(2, correction="Refunds take 5 days.")])
    assert result is not None and result.score == pytest.approx(0.5)
    assert result.details is not None and result.details["correction"] == "Refunds take 5 days."
    assert result.details["feedback_ids"] == [1, 2]
    # a rating next to a correction wins for that row; a row with nothing is ignored
    result = s.score(req("a"), [fb(1, rating=0.25, correction="better"), fb(2)])
    assert result is not None and result.score == pytest.approx(0.25) and result.details["n_feedback"] == 1  # type: ignore[index]
    assert s.score(req("a"), [fb(rating=7.0)]).score == 1.0  # type: ignore[union-attr]  # clamped


# ----------------------------------------------------------------------------- reference


def test_text_measures() -> None:
    assert token_f1("the refund takes five days", "refund takes five days") == 1.0
    assert token_f1("", "") == 1.0
    assert token_f1("nothing in common", "refund policy") == 0.0
    assert 0 < token_f1("refunds take 5 business days to arrive", "refunds take 5 days") < 1
    assert contains_answer("Your order ships in 2 days.", ["2 days"]) == 1.0
    assert contains_answer("Your order ships in 12 days.", ["2 days"]) == 0.0


def test_reference_from_tags_lookup_and_missing() -> None:
    s = ReferenceScorer()
    assert s.score(req("whatever"), []) is None
    good = s.score(
        req("Refunds take 5 business days.", tags={"reference": "Refunds take 5 business days."}), []
    )
    assert good is not None and good.score == 1.0 and good.details["source"] == "tags"  # type: ignore[index]
    bad = s.score(req("I like trains.", tags={"reference": "Refunds take 5 business days."}), [])
    assert bad is not None and bad.score == 0.0
    empty = s.score(req(None, tags={"reference": "x y"}), [])
    assert empty is not None and empty.score == 0.0
    contains = ReferenceScorer(metric="contains_answer")
    r = contains.score(
        req("Sure - it is 30 days from delivery.", tags={"reference": "30 days", "aliases": ["a month"]}), []
    )
    assert r is not None and r.score == 1.0
    lookup = ReferenceScorer(
        lookup=lambda request: {"where is my parcel?": "track it online"}.get(request.user_text)
    )
    r = lookup.score(req("You can track it online.", prompt="where is my parcel?"), [])
    assert r is not None and r.details["source"] == "lookup" and r.score > 0.5  # type: ignore[index]


# ----------------------------------------------------------------------------- heuristics


def test_empty() -> None:
    assert EmptyScorer().score(req("  \n"), []).score == 0.0  # type: ignore[union-attr]
    assert EmptyScorer().score(req(None), []).score == 0.0  # type: ignore[union-attr]
    assert EmptyScorer().score(req("ok"), []).score == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm sorry, but I can't help with that request.", 0.0),
        ("I am unable to assist with this.", 0.0),
        ("As an AI language model, I do not have opinions.", 0.0),
        ("Sure! Refunds take 5 days. I can't wait to help you again.", 1.0),
        ("Your parcel is on its way.", 1.0),
    ],
)
def test_refusal(text: str, expected: float) -> None:
    result = RefusalScorer().score(req(text), [])
    assert result is not None and result.score == expected


def test_refusal_skips_empty() -> None:
    assert RefusalScorer().score(req(""), []) is None


def test_repetition() -> None:
    s = RepetitionScorer()
    loop = "I can help with that. " * 12
    assert s.score(req(loop), []).score == 0.0  # type: ignore[union-attr]
    lines = "\n".join(["Please contact support today."] * 4 + ["Thanks for waiting for the answer."])
    assert s.score(req(lines), []).score == 0.0  # type: ignore[union-attr]
    normal = (
        "Refunds are issued to the original payment method within five business days after the returned "
        "item reaches our warehouse and passes inspection."
    )
    assert s.score(req(normal), []).score == 1.0  # type: ignore[union-attr]
    assert s.score(req("too short"), []) is None


def test_truncation() -> None:
    assert TruncationScorer().score(req("abc", finish_reason="length"), []).score == 0.0  # type: ignore[union-attr]
    assert TruncationScorer().score(req("abc", finish_reason="stop"), []).score == 1.0  # type: ignore[union-attr]
    assert TruncationScorer().score(req("abc", finish_reason=None), []) is None


def test_length_outlier_running_window() -> None:
    s = LengthOutlierScorer(min_history=20, window=100)
    results = [s.score(req("word " * (20 + i % 5), rid=f"r{i}"), []) for i in range(30)]
    assert results[:20] == [None] * 20  # warming up
    assert all(r is not None and r.score == 1.0 for r in results[20:])
    long = s.score(req("word " * 2000, rid="long"), [])
    short = s.score(req("ok", rid="short"), [])
    assert long is not None and long.score == 0.0 and long.details["robust_z"] > 3.5  # type: ignore[index]
    assert short is not None and short.score == 0.0
    # a request seen twice is remembered once
    before = len(s._history["base"])
    s.score(req("ok", rid="short"), [])
    assert len(s._history["base"]) == before


def test_length_outlier_warm_start_and_groups() -> None:
    s = LengthOutlierScorer(min_history=10, group_by="all")
    s.warm_start([100] * 5 + [110] * 5)
    r = s.score(req("x" * 104), [])
    assert r is not None and r.score == 1.0
    with pytest.raises(ValueError, match="group_by"):
        LengthOutlierScorer(group_by="colour")
    per_name = LengthOutlierScorer(min_history=10)
    with pytest.raises(ValueError, match="needs group="):
        per_name.warm_start([100] * 10)
    per_name.warm_start([100] * 10, group="base")
    r = per_name.score(req("x" * 5000), [])
    assert r is not None and r.score == 0.0


# ----------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("How do I return the shoes I bought last week? The size is wrong.", "en"),
        ("¿Cómo puedo devolver los zapatos que compré la semana pasada? La talla no es correcta.", "es"),
        (
            "Je voudrais retourner les chaussures que j'ai achetées la semaine dernière, elles sont petites.",
            "fr",
        ),
        ("Ich möchte die Schuhe zurückgeben, die ich letzte Woche gekauft habe, sie sind zu klein.", "de"),
        ("Как вернуть обувь, которую я купил на прошлой неделе?", "cyrillic"),
        ("我上周买的鞋子尺码不对，怎么退货？请告诉我流程。", "zh"),
        ("先週買った靴のサイズが合わないので、返品したいです。", "ja"),
        ("ok", "unknown"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text).language == language


def test_language_mismatch() -> None:
    s = LanguageMismatchScorer()
    same = s.score(
        req(
            "You can return them within 30 days for a full refund of the price.",
            prompt="How do I return the shoes I bought? They are too small for me.",
        ),
        [],
    )
    assert same is not None and same.score == 1.0
    other = s.score(
        req(
            "Puede devolver los zapatos en un plazo de 30 días para obtener un reembolso.",
            prompt="How do I return the shoes I bought? They are too small for me.",
        ),
        [],
    )
    assert other is not None and other.score == 0.0 and other.details["answer"] == "es"  # type: ignore[index]
    tagged = s.score(
        req(
            "You can return them within 30 days for a refund of the full price.",
            prompt="??",
            tags={"language": "fr"},
        ),
        [],
    )
    assert tagged is not None and tagged.score == 0.0
    assert s.score(req("ok", prompt="How do I return the shoes I bought? They are too small."), []) is None
