"""The request log's disk spill (serving.request_spill via RequestLogWriter(spill_dir=...)) on SQLite: a long
outage overflows to disk instead of dropping, memory stays bounded, records survive a close (or a crash)
during an outage and the next writer replays them exactly once; the folder cap and torn lines."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import OperationalError

from serving.request_log import RequestLogWriter
from serving.request_spill import RequestSpill
from serving.store import Database, RequestRow
from serving.testing import count_request_rows as count_rows
from serving.testing import request_record as record
from serving.testing import wait_until


def outage(writer: RequestLogWriter) -> threading.Event:
    """While the returned event is set, every database write of `writer` fails like an unreachable server."""
    down = threading.Event()
    down.set()
    real = writer._insert_rows  # every write goes through it, replays of spilled records included

    def failing(rows: list[dict[str, Any]]) -> None:
        if down.is_set():
            raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("unable to open database"))
        real(rows)

    writer._insert_rows = failing  # type: ignore[method-assign]
    return down


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("spill-*.jsonl"))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path}/log.db")


def test_overflow_goes_to_disk_not_dropped_and_memory_stays_bounded(db: Database, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    writer = RequestLogWriter(
        db, batch_size=10, flush_interval_s=0.01, max_buffer=20, max_backoff_s=0.02, spill_dir=spill
    )
    down = outage(writer)
    assert all(writer.log(record(i)) for i in range(300))
    stats = writer.stats()
    assert stats.dropped == 0 and stats.written == 0
    assert stats.spilled == 280 and stats.pending == 300  # 20 in memory, the rest on disk
    assert len(writer._buffer) + writer._inflight <= 20
    assert sum(len(p.read_text().splitlines()) for p in segments(spill)) == 280
    down.clear()  # the database is back
    assert writer.flush(timeout=20)
    assert count_rows(db) == 300
    stats = writer.stats()
    assert stats.pending == 0 and stats.spilled == 0 and stats.replayed == 280 and stats.rejected == 0
    assert segments(spill) == []
    assert writer.close(timeout=5)


def test_close_during_outage_keeps_records_on_disk_and_the_next_writer_replays_them(
    db: Database, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    first = RequestLogWriter(
        db, batch_size=10, flush_interval_s=0.01, max_buffer=15, max_backoff_s=0.02, spill_dir=spill
    )
    outage(first)
    for i in range(60):
        assert first.log(record(i))
    assert first.close(timeout=0.3) is True  # nothing lost: the 15 in memory went to disk as well
    assert first.stats().spilled == 60 and first.stats().dropped == 0
    assert count_rows(db) == 0
    # A fresh process on the same folder (a restart), database reachable: it replays on its own.
    second = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, spill_dir=spill)
    second.log(record(1000))
    assert second.flush(timeout=10)
    wait_until(lambda: count_rows(db) == 61)
    assert second.stats().replayed == 60
    assert segments(spill) == []
    assert second.close(timeout=5)


def test_a_replay_repeated_after_it_was_cut_short_neither_duplicates_nor_rejects(
    db: Database, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    first = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, max_buffer=1, spill_dir=spill)
    outage(first)
    for i in range(30):
        first.log(record(i))
    first.close(timeout=0.2)
    with db.engine.begin() as conn:  # a previous replay got 12 rows in before the process died
        conn.execute(insert(RequestRow), [record(i).to_row() for i in range(12)])
    second = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, spill_dir=spill)
    wait_until(lambda: not segments(spill))
    assert count_rows(db) == 30
    assert second.stats().rejected == 0 and second.stats().replayed == 30
    second.close(timeout=5)


def test_a_live_writers_segment_is_left_to_it(db: Database, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    busy = RequestLogWriter(
        db, batch_size=5, flush_interval_s=0.01, max_buffer=5, max_backoff_s=0.02, spill_dir=spill
    )
    down = outage(busy)
    for i in range(25):
        busy.log(record(i))
    (held,) = segments(spill)
    other = RequestLogWriter(db, batch_size=5, flush_interval_s=0.01, spill_dir=spill)
    other.log(record(500))
    assert other.flush(timeout=5)
    threading.Event().wait(0.2)  # several turns of the other writer's loop
    assert held.exists() and other.stats().replayed == 0  # still being appended to: not taken
    down.clear()
    assert busy.flush(timeout=10)
    assert count_rows(db) == 26 and segments(spill) == []
    busy.close(timeout=5)
    other.close(timeout=5)


def test_spill_folder_cap_drops_and_counts(db: Database, tmp_path: Path) -> None:
    writer = RequestLogWriter(
        db,
        batch_size=10,
        flush_interval_s=0.01,
        max_buffer=10,
        max_backoff_s=0.02,
        spill_dir=tmp_path / "spill",
        max_spill_bytes=4000,
    )
    down = outage(writer)
    accepted = [writer.log(record(i)) for i in range(100)]
    on_disk = writer.stats().spilled
    assert 0 < on_disk < 90
    assert accepted.count(False) == writer.stats().dropped == 90 - on_disk
    down.clear()
    assert writer.flush(timeout=10)
    assert count_rows(db) == 10 + on_disk
    writer.close(timeout=5)


def test_torn_and_unreadable_lines_are_skipped(db: Database, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    good = RequestSpill(spill, type(record(0)))
    assert good.append(record(1))
    good.close()
    (path,) = segments(spill)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "x"}) + "\n")  # missing fields: unreadable
        handle.write('{"id": "chatcmpl-torn", "endp')  # the process died mid-line
    writer = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, spill_dir=spill)
    wait_until(lambda: not segments(spill))
    assert count_rows(db) == 1
    writer.close(timeout=5)


def test_a_spilled_row_the_database_refuses_is_rejected_and_the_rest_land(
    db: Database, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    store = RequestSpill(spill, type(record(0)))
    for rec in (record(1), record(2), record(2, response="same id again"), record(3)):
        assert store.append(rec)
    store.close()
    writer = RequestLogWriter(db, batch_size=10, flush_interval_s=0.01, spill_dir=spill)
    wait_until(lambda: not segments(spill))
    assert count_rows(db) == 3
    assert writer.stats().rejected == 1 and "IntegrityError" in (writer.stats().last_error or "")
    writer.close(timeout=5)


def test_close_during_an_outage_spills_after_a_short_grace_not_the_whole_timeout(
    db: Database, tmp_path: Path
) -> None:
    writer = RequestLogWriter(
        db, batch_size=10, flush_interval_s=0.01, max_buffer=100, max_backoff_s=0.02, spill_dir=tmp_path
    )
    outage(writer)
    for i in range(30):
        writer.log(record(i))
    wait_until(lambda: writer.stats().failed_flushes > 0)
    started = time.monotonic()
    assert writer.close(timeout=30) is True
    assert time.monotonic() - started < 10  # the grace (2 s), not the 30 s timeout
    assert writer.stats().spilled == 30 and writer.stats().dropped == 0
