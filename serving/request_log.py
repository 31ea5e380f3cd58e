"""The request log writer: one `requests` row per served request, written off the hot path; plus feedback.

`RequestLogWriter.log(record)` only appends to an in-memory buffer (O(1), never touches the database, safe
to call from asyncio handlers and from any thread). A background thread inserts batches
(`executemany`) and commits. When the database fails, the batch goes back to the front of the buffer and
is retried with exponential backoff. At most `max_buffer` records wait in memory; with a `spill_dir`, the
ones beyond go to JSON-lines files there (`serving.request_spill`, capped at `max_spill_bytes`) and are
replayed into the database once it answers again — also by the next process, if this one stops or dies
first. Only past both caps (or without a spill folder past the first) are records refused and counted in
`stats().dropped`; the hot path never blocks on the database. Rows the database refuses for good
(duplicate id, invalid value) are written one by one, and the refused ones are counted in
`stats().rejected` and logged. `close()` flushes everything before returning, and with a spill folder keeps
on disk what the database would not take in time.

Feedback (`log_feedback`) is rare and synchronous: it checks that the request exists (waiting for a
pending request record to be flushed first), then inserts into `feedback`. Call it with
`await asyncio.to_thread(writer.log_feedback, record)` from async code.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from serving.registry.errors import InvalidRequestError, RequestNotFoundError
from serving.request_spill import RequestSpill
from serving.store import Database, FeedbackRow, RequestRow, utcnow

__all__ = ["FeedbackRecord", "RequestLogStats", "RequestLogWriter", "RequestRecord", "encode_messages"]

log = logging.getLogger(__name__)

CLOSE_GRACE_WHEN_FAILING_S = 2.0
"""How long `close()` keeps retrying a failing database before spilling the rest (with a spill folder)."""


class _ReplayInterrupted(Exception):
    """A spilled segment's replay stopped at a database failure (already counted in failed_flushes)."""


def _is_transient(exc: BaseException) -> bool:
    """Database unavailable/locked/broken connection (retry) vs a record it refuses for good (do not)."""
    if isinstance(exc, IntegrityError | DataError):
        return False
    return isinstance(exc, DBAPIError | OSError)


def encode_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """The `requests.prompt` text of a chat request: its messages as a JSON list."""
    return json.dumps([dict(m) for m in messages], ensure_ascii=False)


def _close_at_exit(ref: weakref.ref[RequestLogWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.close(timeout=10.0)


_RESPONSE_ID = re.compile(r"^(chatcmpl|cmpl)-[0-9a-f]{32}$")
"""The shape of the response ids this service issues (`serving.protocol.new_id`)."""


@dataclass(slots=True)
class RequestRecord:
    """One row of `requests` (see COMMON schema); `created_at` defaults to now (UTC)."""

    id: str
    endpoint: str  # 'chat.completions' | 'completions'
    model_requested: str
    served_name: str
    prompt: str
    status_code: int
    stream: bool = False
    served_version: str | None = None
    experiment: str | None = None
    arm: str | None = None
    shadow_of: str | None = None
    user_id: str | None = None
    response: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    tags: dict[str, Any] | None = None
    response_format: str | None = None
    tools: str | None = None
    tool_calls: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class FeedbackRecord:
    """One row of `feedback`: at least one of rating (0..1), thumbs (+1/-1), a correction or tags (labels
    known only after the answer, e.g. the slice)."""

    request_id: str
    rating: float | None = None
    thumbs: int | None = None
    correction: str | None = None
    source: str | None = None
    tags: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=utcnow)

    def check(self) -> None:
        """Raise `InvalidRequestError` naming the bad field."""
        if not self.request_id or len(self.request_id) > 64:
            raise InvalidRequestError("feedback needs a request_id of 1-64 characters", param="request_id")
        if self.rating is None and self.thumbs is None and not self.correction and not self.tags:
            raise InvalidRequestError("feedback needs a rating, thumbs, a correction or tags")
        if self.rating is not None and (
            isinstance(self.rating, bool) or not math.isfinite(self.rating) or not 0.0 <= self.rating <= 1.0
        ):
            raise InvalidRequestError(f"rating must be within 0..1, got {self.rating!r}", param="rating")
        if self.thumbs is not None and (isinstance(self.thumbs, bool) or self.thumbs not in (-1, 1)):
            raise InvalidRequestError(f"thumbs must be +1 or -1, got {self.thumbs!r}", param="thumbs")


@dataclass(frozen=True, slots=True)
class RequestLogStats:
    written: int
    """Rows committed."""
    pending: int
    """Records buffered, being written, or spilled to disk by this writer and not yet replayed."""
    failed_flushes: int
    """Batch writes that failed (and were retried)."""
    dropped: int
    """Records refused because the buffer (and the spill folder, if any) was full, or the writer closed."""
    rejected: int
    """Records the database refused for good (duplicate id, invalid value); logged with their id."""
    last_error: str | None
    spilled: int = 0
    """Records this writer put on disk that are not replayed yet (part of `pending`)."""
    replayed: int = 0
    """Spilled records (this writer's or a dead process's) read back and written to the database."""


class RequestLogWriter:
    """Buffers `RequestRecord`s and writes them in batches from a background thread."""

    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        max_buffer: int = 100_000,
        max_backoff_s: float = 5.0,
        spill_dir: Path | None = None,
        max_spill_bytes: int = 1 << 30,
    ) -> None:
        if batch_size <= 0 or max_buffer <= 0 or flush_interval_s <= 0:
            raise ValueError("batch_size, max_buffer and flush_interval_s must be positive")
        self._spill = (
            RequestSpill(Path(spill_dir), RequestRecord, max_bytes=max_spill_bytes)
            if spill_dir is not None
            else None
        )
        self._db = db
        self._batch_size = batch_size
        self._flush_interval = flush_interval_s
        self._max_buffer = max_buffer
        self._max_backoff = max_backoff_s
        self._buffer: deque[RequestRecord] = deque()
        self._inflight = 0
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = math.inf
        self._closed = False
        self._written = 0
        self._failed_flushes = 0
        self._dropped = 0
        self._rejected = 0
        self._last_error: str | None = None
        self._failing = False  # the last database write failed (cleared by the next one that succeeds)
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()
        # Flush at interpreter exit if the owner forgot to close (weakly referenced: no leak).
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ hot path

    def log(self, record: RequestRecord) -> bool:
        """Queue a record (O(1), no I/O). Returns False when it was dropped (buffer full or closed)."""
        with self._lock:
            closed = self._closed
            accepted = not closed and len(self._buffer) + self._inflight < self._max_buffer
            if accepted:
                self._buffer.append(record)
                wake = len(self._buffer) >= self._batch_size
        if accepted:
            if wake:
                self._wake.set()
            return True
        if not closed and self._spill is not None and self._spill.append(record):
            return True
        with self._lock:
            self._dropped += 1
            dropped = self._dropped
        if dropped == 1 or dropped % 1000 == 0:
            log.error(
                "request log: %d record(s) dropped so far (buffer full at %d%s, or writer closed)",
                dropped,
                self._max_buffer,
                "" if self._spill is None else f" and spill folder {self._spill.folder} full",
            )
        return False

    # ------------------------------------------------------------------ control

    def stats(self) -> RequestLogStats:
        spilled = self._spill.own_pending if self._spill is not None else 0
        with self._lock:
            pending = len(self._buffer) + self._inflight + spilled
        return RequestLogStats(
            self._written,
            pending,
            self._failed_flushes,
            self._dropped,
            self._rejected,
            self._last_error,
            spilled=spilled,
            replayed=self._spill.replayed if self._spill is not None else 0,
        )

    def _spilled_pending(self) -> int:
        return self._spill.own_pending if self._spill is not None else 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._drained:
            while self._buffer or self._inflight or self._spilled_pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._drained.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def close(self, timeout: float = 30.0) -> bool:
        """Stop accepting records, write everything buffered (retrying until `timeout`), stop the thread.
        With a spill folder, while the database is failing, retry only `CLOSE_GRACE_WHEN_FAILING_S` and
        put the rest on disk: a replica stopping during an outage must finish before its own shutdown
        deadline (Serve's graceful shutdown), or what it holds in memory would be lost.
        Returns True when nothing is left unwritten (written, or kept on disk for the next writer)."""
        with self._lock:
            if self._closed and not self._thread.is_alive():
                return self.stats().pending == 0
            self._closed = True
        atexit.unregister(self._atexit)
        if self._spill is not None and self._failing:
            timeout = min(timeout, CLOSE_GRACE_WHEN_FAILING_S)
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout + 1.0)
        if self._spill is not None:
            self._spill_leftovers(self._spill)
            return self.stats().pending - self._spilled_pending() == 0
        left = self.stats().pending
        if left:
            log.error("request log closed with %d unwritten record(s): %s", left, self._last_error)
        return left == 0

    def _spill_leftovers(self, spill: RequestSpill) -> None:
        """At close: put what the database did not take in time on disk (replayed by the next writer)."""
        if self._thread.is_alive():  # still writing (a stuck connection): leave its records alone
            log.error("request log writer thread did not stop; %d record(s) unwritten", self.stats().pending)
            return
        with self._lock:
            leftovers, self._buffer = list(self._buffer), deque()
        lost = [r for r in leftovers if not spill.append(r)]
        spill.close()
        if lost:
            with self._lock:
                self._dropped += len(lost)
            log.error("request log closed: %d record(s) lost (spill folder full)", len(lost))
        on_disk = spill.own_pending
        if on_disk:
            log.warning(
                "request log closed with %d record(s) kept in %s (database: %s); the next writer on that "
                "folder replays them",
                on_disk,
                spill.folder,
                self._last_error,
            )

    def __enter__(self) -> RequestLogWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ background thread

    def _take(self) -> list[RequestRecord]:
        with self._lock:
            count = min(self._batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._inflight = count
            return batch

    def _done(self, requeue: list[RequestRecord]) -> None:
        with self._lock:
            self._buffer.extendleft(reversed(requeue))
            self._inflight = 0
            self._drained.notify_all()

    def _run(self) -> None:
        retry_delay = 0.0  # > 0 while backing off after a failed write
        retry_at = 0.0
        while True:
            timeout = max(retry_at - time.monotonic(), 0.0) if retry_delay else self._flush_interval
            self._wake.wait(timeout)
            self._wake.clear()
            stopping = self._stopping.is_set()
            if retry_delay and not stopping and time.monotonic() < retry_at:
                continue  # backing off: a filling buffer does not cut the wait short
            while True:
                batch = self._take()
                if not batch:
                    self._done([])
                    break
                left = self._write(batch)
                self._done(left)
                if left:
                    retry_delay = min(max(retry_delay * 2, 0.05), self._max_backoff)
                    retry_at = time.monotonic() + retry_delay
                    break
                retry_delay = 0.0
            if not retry_delay and self._spill is not None and self._spill.has_segments():
                retry_delay, retry_at = self._replay_spill(self._spill, retry_delay)
            if stopping:
                if not self.stats().pending or time.monotonic() >= self._deadline:
                    return
                retry_at = min(retry_at, self._deadline)

    def _insert_rows(self, rows: list[dict[str, Any]]) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(insert(RequestRow), rows)

    def _replay_spill(self, spill: RequestSpill, retry_delay: float) -> tuple[float, float]:
        """Replay one spilled segment; returns the (delay, when) to retry at after a database failure,
        (0, 0) after a replay (more segments are taken on the next turn, after the in-memory records)."""
        try:
            replayed = spill.replay_one(self._write_replayed, self._batch_size)
        except Exception as exc:  # noqa: BLE001 - this thread must never die
            if not isinstance(exc, _ReplayInterrupted):  # `_write` has already counted that failure
                self._note_failure(exc, 0)
            delay = min(max(retry_delay * 2, 0.05), self._max_backoff)
            return delay, time.monotonic() + delay
        if replayed is not None:
            self._failing = False
            self._wake.set()  # come straight back for the next segment
            with self._lock:
                self._drained.notify_all()
        return 0.0, 0.0

    def _write_replayed(self, records: list[RequestRecord]) -> None:
        """Write replayed records like any batch, skipping ids already stored (a replay cut short and
        repeated); raises `_ReplayInterrupted` when the database failed, so the segment stays for later."""
        with self._db.engine.connect() as conn:
            ids = [r.id for r in records]
            stored = set(conn.scalars(select(RequestRow.id).where(RequestRow.id.in_(ids))))
        fresh = [r for r in records if r.id not in stored]
        if fresh and self._write(fresh):
            raise _ReplayInterrupted(self._last_error or "database write failed")

    def _write(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        """Write a batch; returns the records still to write (all of them after a transient failure)."""
        try:
            self._insert_rows([r.to_row() for r in batch])
        except Exception as exc:  # noqa: BLE001 - classified below; this thread must never die
            if not _is_transient(exc):
                return self._write_one_by_one(batch)
            self._note_failure(exc, len(batch))
            return batch
        self._written += len(batch)
        self._failing = False
        return []

    def _write_one_by_one(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        for index, record in enumerate(batch):
            try:
                self._insert_rows([record.to_row()])
            except Exception as exc:  # noqa: BLE001
                if _is_transient(exc):
                    self._note_failure(exc, len(batch) - index)
                    return batch[index:]
                self._rejected += 1
                self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log.error("request log: database refused request %s: %s", record.id, self._last_error)
            else:
                self._written += 1
        return []

    def _note_failure(self, exc: BaseException, count: int) -> None:
        self._failing = True
        self._failed_flushes += 1
        self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if self._failed_flushes == 1 or self._failed_flushes % 20 == 0:
            log.warning(
                "request log: writing %d record(s) failed (%d failures so far), will retry: %s",
                count,
                self._failed_flushes,
                self._last_error,
            )

    # ------------------------------------------------------------------ feedback

    def _request_exists(self, request_id: str) -> bool:
        with self._db.session() as session:
            return session.scalar(select(RequestRow.id).where(RequestRow.id == request_id)) is not None

    def _is_pending(self, request_id: str) -> bool:
        with self._lock:
            return any(r.id == request_id for r in self._buffer) or self._inflight > 0

    def _await_request(self, request_id: str, wait_s: float) -> bool:
        """Wait up to `wait_s` for the record of a response id this service may have just returned: pending
        in this writer (flushed now), or in another replica's writer (it reaches the database within that
        replica's flush interval). Ids of another shape are not waited for."""
        if self._is_pending(request_id):
            return self.flush(wait_s) and self._request_exists(request_id)
        if not _RESPONSE_ID.match(request_id):
            return False
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if self._request_exists(request_id):
                return True
        return False

    def log_feedback(self, record: FeedbackRecord, *, wait_s: float = 5.0) -> int:
        """Insert feedback synchronously and return its id.

        Raises `InvalidRequestError` (bad fields) or `RequestNotFoundError` (no such request logged, also
        after waiting up to `wait_s` for a pending request record to be written)."""
        record.check()
        if not self._request_exists(record.request_id) and not self._await_request(record.request_id, wait_s):
            raise RequestNotFoundError(f"no logged request with id {record.request_id!r}", param="request_id")
        with self._db.session() as session:
            row = FeedbackRow(
                request_id=record.request_id,
                created_at=record.created_at,
                rating=record.rating,
                thumbs=record.thumbs,
                correction=record.correction,
                source=record.source,
                tags=record.tags,
            )
            session.add(row)
            session.flush()
            return row.id
