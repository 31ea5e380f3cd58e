"""Labels that arrive late: tags sent with feedback win over the request's own for the loop's reads
(slices), the training dataset's slice filter, and scorers that read tags; a correction is the reference
when nothing else is known; corrections and acceptances are counted apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert

from common.log_schema import FeedbackEntry, create_log_tables, feedback_table, requests_table
from monitoring.loop import _count_feedback
from monitoring.scorers.reference import ReferenceScorer
from monitoring.store import load_corrections, load_requests
from training.config import RequestLogSource
from training.data.sources import read_source

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    eng = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    create_log_tables(eng)
    return eng


def add(
    engine: Engine, rid: str, answer: str, *, tags: dict[str, Any] | None = None, **feedback: Any
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(requests_table).values(
                id=rid,
                created_at=T0,
                endpoint="chat.completions",
                model_requested="triage",
                served_name="triage",
                served_version="v1",
                prompt=json.dumps([{"role": "user", "content": f"ticket {rid}"}]),
                response=answer,
                status_code=200,
                stream=False,
                tags=tags,
            )
        )
        if feedback:
            conn.execute(
                insert(feedback_table).values(
                    request_id=rid, created_at=T0 + timedelta(minutes=1), **feedback
                )
            )


def test_feedback_tags_win_over_request_tags(engine: Engine) -> None:
    add(engine, "r1", "billing", tags={"label": "unknown", "ticket": "7"}, thumbs=-1)
    with engine.begin() as conn:
        conn.execute(
            insert(feedback_table).values(
                request_id="r1", created_at=T0 + timedelta(minutes=2), tags={"label": "security"}
            )
        )
    add(engine, "r2", "billing", tags={"label": "billing"})
    rows = {r.id: r for r in load_requests(engine)}
    assert rows["r1"].tags == {"label": "security", "ticket": "7"}
    assert rows["r2"].tags == {"label": "billing"}


def test_corrections_and_acceptances_are_counted_apart(engine: Engine) -> None:
    add(engine, "a", "billing", thumbs=-1, correction="security")
    add(engine, "b", "security", thumbs=1)
    add(engine, "c", "billing", rating=0.9)
    add(engine, "d", "billing", thumbs=-1)  # neither
    with engine.begin() as conn:  # every label arrives with the feedback: all four are "security"
        conn.execute(feedback_table.update().values(tags={"label": "security"}))
    url = str(engine.url)
    assert _count_feedback(url, "triage", {}, T0 - timedelta(days=1), 0.8) == {
        "corrections": 1,
        "accepted": 2,
    }
    counts = _count_feedback(url, "triage", {"label": "security"}, T0 - timedelta(days=1), 0.8)
    assert counts == {"corrections": 1, "accepted": 2}
    assert (
        _count_feedback(url, "triage", {"label": "billing"}, T0 - timedelta(days=1), 0.8)["corrections"] == 0
    )


def test_training_source_filters_the_slice_by_feedback_tags(engine: Engine) -> None:
    add(engine, "a", "billing", correction="security", tags={"label": "security"})
    add(engine, "b", "billing", correction="shipping", tags={"label": "shipping"})
    add(engine, "c", "billing", correction="refund")  # no label at all
    with engine.begin() as conn:
        conn.execute(
            feedback_table.update()
            .where(feedback_table.c.request_id == "a")
            .values(tags={"label": "security"})
        )
        conn.execute(
            feedback_table.update()
            .where(feedback_table.c.request_id == "b")
            .values(tags={"label": "shipping"})
        )
    source = RequestLogSource(database_url=str(engine.url), served_name="triage", tags={"label": "security"})
    raw = read_source(source, "feedback")
    assert [r["request_id"] for r in raw.rows] == ["a"]
    assert raw.rows[0]["messages"][-1] == {"role": "assistant", "content": "security"}
    corrections = load_corrections(engine)
    assert {c.request_id: c.tags.get("label") for c in corrections} == {
        "a": "security",
        "b": "shipping",
        "c": None,
    }


def _entry(correction: str | None = None, tags: dict[str, Any] | None = None) -> FeedbackEntry:
    return FeedbackEntry(id=1, request_id="r", created_at=T0, correction=correction, tags=tags or {})


def test_reference_scorer_exact_match_and_corrections(engine: Engine) -> None:
    add(engine, "r", "Security.", tags={"label": "security"})
    (request,) = load_requests(engine)
    by_label = ReferenceScorer(metric="exact_match", tag_keys=["label"])
    result = by_label.score(request, [])
    assert result is not None and result.score == 1.0 and result.details["source"] == "tags"
    by_correction = ReferenceScorer(metric="exact_match", tag_keys=["reference"])
    assert by_correction.score(request, []) is None  # nothing known yet
    wrong = by_correction.score(request, [_entry(correction="billing")])
    assert wrong is not None and wrong.score == 0.0 and wrong.details["source"] == "feedback"
    with pytest.raises(ValueError, match="metric must be one of token_f1, contains_answer, exact_match"):
        ReferenceScorer(metric="bleu")  # type: ignore[arg-type]
