"""Feedback that carries labels (tags) and feedback that arrives before its request's log record: a response
id of this service's shape is waited for (another replica may still hold the record in its buffer), an id
of another shape is refused at once, and nothing is stored for an id that never shows up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from serving.protocol import FeedbackRequest, new_id
from serving.registry import InvalidRequestError, RequestNotFoundError
from serving.request_log import FeedbackRecord, RequestLogWriter
from serving.store import Database, FeedbackRow
from serving.testing import request_record


@pytest.fixture()
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'log.db'}")


def test_feedback_request_takes_tags_alone_and_checks_them() -> None:
    fb = FeedbackRequest.model_validate({"id": "chatcmpl-1", "tags": {"label": "security", "urgent": True}})
    assert fb.tags == {"label": "security", "urgent": True}
    for bad in ({"label": ["a", "b"]}, {f"k{i}": i for i in range(33)}, {"": "x"}, {"label": "x" * 1025}):
        with pytest.raises(ValidationError):
            FeedbackRequest.model_validate({"id": "chatcmpl-1", "tags": bad})
    with pytest.raises(ValidationError, match="rating, thumbs, correction or tags"):
        FeedbackRequest.model_validate({"id": "chatcmpl-1", "tags": {}})


def test_tags_are_stored_with_the_feedback(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=1, flush_interval_s=0.05)
    writer.log(request_record(1))
    writer.log_feedback(
        FeedbackRecord("chatcmpl-00000001", thumbs=-1, correction="security", tags={"label": "security"})
    )
    writer.close()
    with db.session() as session:
        row = session.scalars(select(FeedbackRow)).one()
        assert (row.correction, row.tags) == ("security", {"label": "security"})
    with pytest.raises(InvalidRequestError, match="rating, thumbs, a correction or tags"):
        RequestLogWriter(db).log_feedback(FeedbackRecord("chatcmpl-00000001"))


def test_feedback_waits_for_a_record_another_replica_is_still_writing(db: Database) -> None:
    rid = new_id("chatcmpl")
    this_replica = RequestLogWriter(db, flush_interval_s=0.05)
    other_replica = RequestLogWriter(db, batch_size=1000, flush_interval_s=60)  # holds the record for now

    def flush_later() -> None:
        time.sleep(0.8)
        other_replica.flush(5)

    other_replica.log(request_record(7, id=rid))
    threading.Thread(target=flush_later, daemon=True).start()
    started = time.monotonic()
    this_replica.log_feedback(FeedbackRecord(rid, thumbs=1, tags={"label": "billing"}), wait_s=5)
    assert 0.5 < time.monotonic() - started < 5
    other_replica.close()
    this_replica.close()


def test_unknown_ids_are_refused_and_nothing_is_stored(db: Database) -> None:
    writer = RequestLogWriter(db, flush_interval_s=0.05)
    started = time.monotonic()
    with pytest.raises(RequestNotFoundError):
        writer.log_feedback(FeedbackRecord("not-one-of-ours", thumbs=1), wait_s=5)
    assert time.monotonic() - started < 1  # another shape of id: not waited for
    with pytest.raises(RequestNotFoundError):
        writer.log_feedback(FeedbackRecord(new_id("chatcmpl"), thumbs=1), wait_s=0.3)
    writer.close()
    with db.session() as session:
        assert session.scalars(select(FeedbackRow)).all() == []
