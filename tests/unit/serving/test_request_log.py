"""RequestLogWriter on SQLite: concurrency, batching off the caller's thread, outages, shutdown, feedback."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from serving.api.errors import registry_status
from serving.registry import InvalidRequestError, RequestNotFoundError
from serving.request_log import FeedbackRecord, RequestLogWriter
from serving.store import Database, FeedbackRow, RequestRow, create_schema
from serving.testing import count_request_rows, request_record, wait_until

record = request_record
count_rows = count_request_rows


def flaky(writer: RequestLogWriter, failures: int) -> list[str]:
    """Make the next `failures` batch inserts fail like a locked/unreachable database; return call log."""
    real = writer._insert_rows
    calls: list[str] = []

    def insert(rows: list[dict[str, Any]]) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) <= failures:
            raise OperationalError(
                "INSERT INTO requests ...", {}, sqlite3.OperationalError("database is locked")
            )
        real(rows)

    writer._insert_rows = insert  # type: ignore[method-assign]
    return calls


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path}/log.db")


def test_ten_thousand_records_from_many_threads_all_land(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=256, flush_interval_s=0.05)
    calls = flaky(writer, 0)

    def produce(start: int) -> None:
        for i in range(start, start + 1250):
            assert writer.log(record(i))

    threads = [threading.Thread(target=produce, args=(k * 1250,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.close(timeout=30)
    stats = writer.stats()
    assert (stats.written, stats.pending, stats.dropped, stats.rejected) == (10_000, 0, 0, 0)
    assert count_rows(db) == 10_000
    assert set(calls) == {"request-log-writer"}  # the database is only touched by the writer thread
    assert len(calls) < 10_000 / 10  # batched, not row by row
    with db.session() as session:
        row = session.get(RequestRow, "chatcmpl-00004321")
        assert row is not None and row.tags == {"slice": "billing", "i": 4321} and row.stream is False
        assert row.created_at.tzinfo is not None


def test_outage_keeps_records_and_retries_with_backoff(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=50, flush_interval_s=0.01, max_backoff_s=0.05)
    calls = flaky(writer, 6)
    for i in range(500):
        assert writer.log(record(i))
    assert writer.flush(timeout=10)
    stats = writer.stats()
    assert stats.failed_flushes == 6 and stats.written == 500 and stats.dropped == 0
    assert stats.last_error is not None and "database is locked" in stats.last_error
    assert count_rows(db) == 500
    assert len(calls) >= 6 + 10
    writer.close()


def test_backoff_is_not_cut_short_by_incoming_records(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, max_backoff_s=0.2)
    calls = flaky(writer, 10**9)
    stop, i = time.monotonic() + 0.5, 0
    while time.monotonic() < stop:  # keep the buffer "full": every log() would wake the writer
        writer.log(record(i))
        i += 1
        time.sleep(0.001)
    # 0.05 + 0.1 + 0.2 + 0.2 ... s of backoff: a handful of attempts, not one per incoming record.
    assert 1 <= len(calls) <= 15
    assert writer.close(timeout=0.05) is False


def test_locked_sqlite_database_then_recovery(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/locked.db"
    db = Database(url, busy_timeout_s=0.02)
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, max_backoff_s=0.05)
    for i in range(100):
        writer.log(record(i))
    wait_until(lambda: writer.stats().failed_flushes >= 2)
    assert writer.stats().written == 0 and writer.stats().pending == 100
    blocker.execute("ROLLBACK")
    blocker.close()
    assert writer.flush(timeout=10)
    assert count_rows(db) == 100
    assert writer.close()


def test_schema_missing_at_first_then_created(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/late.db", create=False)
    writer = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, max_backoff_s=0.05)
    for i in range(30):
        writer.log(record(i))
    wait_until(lambda: writer.stats().failed_flushes >= 1)
    assert "no such table" in (writer.stats().last_error or "")
    create_schema(db.engine)
    assert writer.close(timeout=10)
    assert count_rows(db) == 30


def test_close_flushes_everything(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=100_000, flush_interval_s=60)
    for i in range(1234):
        writer.log(record(i))
    time.sleep(0.05)
    assert count_rows(db) == 0  # nothing due yet: neither a full batch nor the interval
    assert writer.close(timeout=10)
    assert count_rows(db) == 1234
    assert writer.log(record(99_999)) is False  # closed: refused and counted, never blocks
    assert writer.stats().dropped == 1


def test_close_during_outage_retries_until_the_database_is_back(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=20, flush_interval_s=0.01, max_backoff_s=0.02)
    flaky(writer, 5)
    for i in range(100):
        writer.log(record(i))
    assert writer.close(timeout=10)
    assert count_rows(db) == 100 and writer.stats().failed_flushes == 5


def test_close_gives_up_at_its_timeout_and_reports_pending(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=20, flush_interval_s=0.01, max_backoff_s=0.02)
    flaky(writer, 10**9)
    for i in range(40):
        writer.log(record(i))
    assert writer.close(timeout=0.2) is False
    assert writer.stats().pending == 40 and writer.stats().written == 0


def test_full_buffer_drops_and_counts_without_blocking(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, max_buffer=100, max_backoff_s=0.02)
    flaky(writer, 20)
    accepted = [writer.log(record(i)) for i in range(150)]
    assert accepted.count(False) == 50 and all(accepted[:100])
    assert writer.stats().dropped == 50
    assert writer.close(timeout=10)
    assert count_rows(db) == 100


def test_refused_rows_are_rejected_not_retried_forever(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=100, flush_interval_s=0.01)
    writer.log(record(1))
    assert writer.flush()
    writer.log(record(2))
    writer.log(record(1, response="duplicate id"))
    writer.log(record(3, tags={"bad": object()}))  # not JSON-serializable
    writer.log(record(4))
    assert writer.close(timeout=10)
    stats = writer.stats()
    assert (stats.written, stats.rejected, stats.pending) == (3, 2, 0)
    assert count_rows(db) == 3


def test_feedback(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=1000, flush_interval_s=60)
    writer.log(record(1))
    # The request is still buffered: feedback waits for it to be written instead of failing.
    fid = writer.log_feedback(FeedbackRecord("chatcmpl-00000001", rating=0.8, source="ui"))
    fid2 = writer.log_feedback(FeedbackRecord("chatcmpl-00000001", thumbs=-1, correction="better answer"))
    assert fid2 > fid
    with db.session() as session:
        rows = session.scalars(select(FeedbackRow).order_by(FeedbackRow.id)).all()
        assert [(r.rating, r.thumbs, r.correction) for r in rows] == [
            (0.8, None, None),
            (None, -1, "better answer"),
        ]
    with pytest.raises(RequestNotFoundError) as info:
        writer.log_feedback(FeedbackRecord("chatcmpl-missing", thumbs=1))
    assert registry_status(info.value) == 404
    for bad in (
        FeedbackRecord("chatcmpl-00000001"),
        FeedbackRecord("chatcmpl-00000001", rating=1.5),
        FeedbackRecord("chatcmpl-00000001", rating=float("nan")),
        FeedbackRecord("chatcmpl-00000001", thumbs=0),
        FeedbackRecord("", thumbs=1),
    ):
        with pytest.raises(InvalidRequestError):
            writer.log_feedback(bad)
    writer.close()
