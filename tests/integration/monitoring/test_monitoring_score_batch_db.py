"""score_batch on the real shared schema (created by serving.store) in a SQLite file and in Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.drift import check_quality_drift_from_log
from monitoring.scorers import score_batch
from monitoring.store import connect, load_corrections, load_prompts
from serving.store import Database, FeedbackRow, RequestRow, ScoreRow
from serving.testing import PostgresUnavailable, postgres_schema

pytestmark = pytest.mark.integration

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
REFERENCE = "Refunds reach your original payment method within 5 business days."


def fill(db: Database) -> None:
    """100 requests to version v1: the first 50 answer right, the last 50 wrong; feedback on two."""
    with db.session() as s:
        for i in range(100):
            good = i < 50
            s.add(
                RequestRow(
                    id=f"chatcmpl-{i:03d}",
                    created_at=T0 + timedelta(seconds=i),
                    endpoint="chat.completions",
                    model_requested="support",
                    served_name="support",
                    served_version="v1",
                    prompt=json.dumps(
                        [{"role": "user", "content": "How long does a refund take to arrive?"}]
                    ),
                    response=REFERENCE if good else "Try rebooting the hub.",
                    status_code=200,
                    stream=False,
                    finish_reason="stop",
                    tags={"intent": "refunds", "reference": REFERENCE},
                )
            )
        s.add(FeedbackRow(request_id="chatcmpl-001", created_at=T0 + timedelta(minutes=5), thumbs=1))
        s.add(
            FeedbackRow(
                request_id="chatcmpl-070",
                created_at=T0 + timedelta(minutes=5),
                correction=REFERENCE,
                source="agent",
            )
        )


def exercise(db: Database, engine_url: str, schema: str | None = None) -> None:
    fill(db)
    since = T0 - timedelta(minutes=1)
    summary = score_batch(engine_url, since=since, scorers=["reference", "feedback", "empty"], schema=schema)
    assert summary.n_requests == 100
    assert summary.written == {"reference": 100, "feedback": 2, "empty": 100}
    assert summary.mean("reference", version="support@v1") == pytest.approx(0.5)
    assert summary.mean("feedback", slice="intent=refunds") == pytest.approx(0.5)
    # rows written by monitoring are readable through serving's ORM (the contract holds both ways)
    with db.session() as s:
        rows = s.query(ScoreRow).filter(ScoreRow.scorer == "reference").all()
        assert len(rows) == 100 and rows[0].created_at.tzinfo is not None
        assert rows[0].details is not None and rows[0].details["metric"] == "token_f1"
    assert (
        score_batch(
            engine_url, since=since, scorers=["reference", "feedback", "empty"], schema=schema
        ).n_written
        == 0
    )
    engine = connect(engine_url, schema=schema)
    try:
        report = check_quality_drift_from_log(
            engine, "reference", served_name="support", served_version="v1", min_samples=20
        )
        assert report.drifted and report.evidence["change_index"] == 50 and report.statistic > 0.5
        assert report.subject == "support@v1:reference"
        assert [c.request_id for c in load_corrections(engine)] == ["chatcmpl-070"]
        assert len(load_prompts(engine, served_name="support", limit=25)) == 25
    finally:
        engine.dispose()


def test_score_batch_on_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tuneloop.db'}"
    db = Database(url)
    try:
        exercise(db, url)
    finally:
        db.dispose()


@pytest.fixture()
def pg_schema() -> Iterator[str]:
    try:
        with postgres_schema(PG_URL, "mon_it_") as name:
            yield name
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def test_score_batch_on_postgres(pg_schema: str) -> None:
    db = Database(PG_URL, schema=pg_schema)
    try:
        assert "scores" in db.table_names()
        exercise(db, PG_URL, schema=pg_schema)
    finally:
        db.dispose()
