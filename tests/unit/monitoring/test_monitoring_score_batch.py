"""score_batch against a real SQLite file: scores only unscored requests, aggregates per version/slice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select

from common.log_schema import create_log_tables
from monitoring.scorers import LengthOutlierScorer, LlmJudgeScorer, score_batch
from monitoring.scorers.batch import parse_version_key, version_key
from monitoring.store import (
    connect,
    feedback_table,
    load_corrections,
    load_prompts,
    load_score_stream,
    requests_table,
    scores_table,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add_request(
    engine: Engine,
    rid: str,
    *,
    at: datetime,
    response: str | None,
    served_name: str = "support",
    served_version: str | None = "v1",
    status: int = 200,
    tags: dict[str, Any] | None = None,
    prompt: str = "How do I get a refund for my order?",
    finish_reason: str = "stop",
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(requests_table).values(
                id=rid,
                created_at=at,
                endpoint="chat.completions",
                model_requested=served_name,
                served_name=served_name,
                served_version=served_version,
                prompt=json.dumps([{"role": "user", "content": prompt}]),
                response=response,
                status_code=status,
                stream=False,
                finish_reason=finish_reason,
                tags=tags,
            )
        )


def add_feedback(engine: Engine, rid: str, **kw: Any) -> None:
    with engine.begin() as conn:
        conn.execute(insert(feedback_table).values(request_id=rid, created_at=T0 + timedelta(hours=1), **kw))


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    eng = connect(f"sqlite:///{tmp_path / 'log.db'}")
    create_log_tables(eng)
    return eng


def seed(engine: Engine) -> None:
    ref = "Refunds take 5 business days."
    add_request(engine, "a", at=T0, response=ref, tags={"intent": "refunds", "reference": ref})
    add_request(
        engine,
        "b",
        at=T0 + timedelta(seconds=1),
        response="I like trains.",
        tags={"intent": "refunds", "reference": ref},
    )
    add_request(
        engine,
        "c",
        at=T0 + timedelta(seconds=2),
        response="",
        tags={"intent": "shipping"},
        served_version=None,
        served_name="base-model",
        finish_reason="length",
    )
    add_request(
        engine, "d", at=T0 + timedelta(seconds=3), response=None, status=500, tags={"intent": "shipping"}
    )
    add_request(engine, "old", at=T0 - timedelta(days=2), response="x", tags={"intent": "refunds"})
    add_feedback(engine, "a", thumbs=1)
    add_feedback(engine, "b", correction="Refunds take 5 business days.")


def test_version_keys() -> None:
    assert version_key("support", None) == "support@base"
    assert parse_version_key("support@abc") == ("support", "abc")
    assert parse_version_key("support@base") == ("support", None)


def test_score_batch_scores_aggregates_and_is_idempotent(engine: Engine) -> None:
    seed(engine)
    since = T0 - timedelta(hours=1)
    summary = score_batch(engine, since=since, scorers=["feedback", "reference", "empty", "truncation"])
    assert summary.n_requests == 3  # the 500 and the old row are not looked at
    assert summary.written == {"feedback": 2, "reference": 2, "empty": 3, "truncation": 3}
    assert summary.not_applicable["feedback"] == 1 and summary.not_applicable["reference"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(scores_table)).scalar() == 10
        rows = conn.execute(
            select(scores_table.c.request_id, scores_table.c.scorer, scores_table.c.score)
        ).all()
    by = {(r, s): v for r, s, v in rows}
    assert by[("a", "reference")] == 1.0 and by[("b", "reference")] == 0.0
    assert by[("b", "feedback")] == 0.0 and by[("a", "feedback")] == 1.0
    assert by[("c", "empty")] == 0.0 and by[("c", "truncation")] == 0.0
    assert summary.mean("reference", version="support@v1") == pytest.approx(0.5)
    assert summary.per_version["support@v1"]["empty"].n == 2
    assert summary.per_version["base-model@base"]["empty"].mean == 0.0
    assert summary.mean("empty", slice="intent=refunds") == 1.0
    assert summary.mean("empty", slice="intent=shipping") == 0.0
    assert summary.mean("empty") == pytest.approx(2 / 3)
    assert summary.per_version_slice["support@v1"]["intent=refunds"]["feedback"].n == 2
    assert json.loads(json.dumps(summary.to_dict()))["written"]["empty"] == 3

    again = score_batch(engine, since=since, scorers=["feedback", "reference", "empty", "truncation"])
    assert again.n_written == 0
    assert again.per_version["support@v1"]["reference"].n == 2  # aggregates still cover the window
    # new feedback for a request not yet feedback-scored is picked up by the next batch
    add_feedback(engine, "c", rating=0.4)
    third = score_batch(engine, since=since, scorers=["feedback"])
    assert third.written == {"feedback": 1}


def test_score_batch_defaults_and_window_bounds(engine: Engine) -> None:
    seed(engine)
    summary = score_batch(engine, since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=2))
    assert summary.n_requests == 1 and summary.written["empty"] == 1
    newest = score_batch(engine, since=T0 - timedelta(hours=1), scorers=["empty"], limit=1)
    assert newest.n_requests == 1 and newest.written["empty"] == 1  # "c", the newest served row
    assert set(summary.written) >= {"feedback", "reference", "refusal", "language_mismatch", "length_outlier"}


def test_score_batch_records_failures_and_leaves_them_unscored(engine: Engine) -> None:
    seed(engine)

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="boom")

    judge = LlmJudgeScorer(
        base_url="http://judge/v1",
        model="m",
        sample_rate=1.0,
        client=httpx.Client(transport=httpx.MockTransport(down)),
    )
    summary = score_batch(engine, since=T0 - timedelta(hours=1), scorers=[judge])
    assert (
        summary.n_failures == 2 and summary.written["llm_judge"] == 1
    )  # the empty answer is scored 0 locally
    assert {f.request_id for f in summary.failures} == {"a", "b"}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(scores_table)).scalar() == 1


def test_stateful_scorer_instance_persists_across_batches(engine: Engine) -> None:
    scorer = LengthOutlierScorer(min_history=10)
    for i in range(12):
        add_request(engine, f"r{i}", at=T0 + timedelta(seconds=i), response="word " * (30 + i % 3))
    first = score_batch(engine, since=T0, scorers=[scorer], chunk_size=5)
    assert first.written["length_outlier"] == 2 and first.not_applicable["length_outlier"] == 10
    add_request(engine, "huge", at=T0 + timedelta(minutes=1), response="word " * 3000)
    second = score_batch(engine, since=T0, scorers=[scorer])
    # the 10 warm-up rows are scored now, and the huge answer is flagged
    assert second.written["length_outlier"] == 11
    assert second.per_version["support@v1"]["length_outlier"].mean == pytest.approx(12 / 13)


def test_store_windows_streams_and_corrections(engine: Engine) -> None:
    seed(engine)
    score_batch(engine, since=T0 - timedelta(hours=1), scorers=["empty"])
    prompts = load_prompts(engine, served_name="support", limit=2)
    assert [p.id for p in prompts] == ["a", "b"]  # newest two served rows, oldest first; the 500 is excluded
    stream = load_score_stream(engine, "empty", served_name="support", served_version="v1")
    assert [(rid, v) for _, rid, v in stream] == [("a", 1.0), ("b", 1.0)]
    assert stream[0][0].tzinfo is not None
    corrections = load_corrections(engine)
    assert len(corrections) == 1 and corrections[0].request_id == "b"
    assert corrections[0].correction == "Refunds take 5 business days."
    assert corrections[0].messages[-1]["content"] == "How do I get a refund for my order?"


def test_naive_datetimes_are_rejected(engine: Engine) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        score_batch(engine, since=datetime(2026, 1, 1))


def test_connect_rejects_unknown_urls() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        connect("mysql://x@y/z")
    with pytest.raises(ValueError, match="only supported on Postgres"):
        connect("sqlite://", schema="abc")
