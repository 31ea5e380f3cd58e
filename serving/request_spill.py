"""The request log's disk spill: records that do not fit the in-memory buffer (a long database outage) go to
JSON-lines segment files instead of being dropped, and are replayed into the database when it is back.

Layout: `<spill_dir>/spill-<writer id>-<seq>.jsonl`. A writer appends to its own current segment (one JSON
line per record, written through at once, so a crashed process loses nothing it had accepted) and holds
an exclusive `flock` on it while it is open. Segments no live writer holds — ours after a rotation, or one
left behind by a process that died or closed during an outage — are replayed by any writer sharing the
folder (replicas sharing a home): the replayer takes the segment's lock, inserts its rows with
"insert, skip ids already there" (a replay cut short and repeated never duplicates or rejects a row), then
deletes the file. Each writer keeps the folder under `max_bytes` as far as it knows (what was there when
it started, plus what it wrote, minus what it replayed); past it records are refused and the caller counts
them as dropped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

__all__ = ["RequestSpill"]

SEGMENT_GLOB = "spill-*.jsonl"


def _encode(record: Any) -> str:
    row = asdict(record)
    row["created_at"] = row["created_at"].isoformat()
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


class RequestSpill:
    """Segment files of spilled records in one folder (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        record_type: type,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._record_type = record_type
        self._field_names = {f.name for f in fields(record_type)}
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._writer_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self._lock = threading.Lock()
        self._current: IO[str] | None = None
        self._current_path: Path | None = None
        self._current_size = 0
        self._folder_bytes = sum(p.stat().st_size for p in self._segments())
        self.spilled = 0
        """Records this writer appended (all time)."""
        self.own_pending = 0
        """Records this writer spilled that are not yet replayed."""
        self.replayed = 0
        """Records read back from segments (any writer's) and handed to the database."""

    # ------------------------------------------------------------------ appending (hot path, when full)

    def append(self, record: Any) -> bool:
        """Write one record to the current segment; False when the folder is at its size cap."""
        line = _encode(record)
        size = len(line.encode("utf-8"))
        with self._lock:
            if self._folder_bytes + size > self._max_bytes:
                return False
            if self._current is None or self._current_size + size > self._segment_bytes:
                self._open_next()
            assert self._current is not None
            self._current.write(line)
            self._current.flush()
            self._current_size += size
            self._folder_bytes += size
            self.spilled += 1
            self.own_pending += 1
        return True

    def _open_next(self) -> None:
        self._close_current()
        self._seq += 1
        path = self.folder / f"spill-{self._writer_id}-{self._seq:06d}.jsonl"
        handle = path.open("a", encoding="utf-8")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        self._current, self._current_path, self._current_size = handle, path, 0
        log.warning("request log: buffer full, spilling records to %s", path)

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()  # releases the flock: the segment becomes replayable
        self._current, self._current_path, self._current_size = None, None, 0

    def rotate(self) -> None:
        """Close the current segment so that it can be replayed."""
        with self._lock:
            self._close_current()

    def close(self) -> None:
        self.rotate()

    # ------------------------------------------------------------------ replaying (background thread)

    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob(SEGMENT_GLOB))

    def has_segments(self) -> bool:
        """True when there is anything on disk to replay (own current segment included)."""
        return any(True for _ in self.folder.glob(SEGMENT_GLOB))

    def replay_one(self, insert: Callable[[list[Any]], None], batch_size: int) -> int | None:
        """Replay the oldest segment no live writer holds: `insert` gets batches of records (it must skip
        ids already stored, and raise on a database failure, which leaves the segment for a later try).
        Returns the number of records replayed, or None when there was no segment to take."""
        with self._lock:
            if self._current is not None and self._current_size > 0:
                self._close_current()  # our own records become replayable once the database is back
        for path in self._segments():
            try:
                handle = path.open("r", encoding="utf-8")
            except FileNotFoundError:  # another replayer finished it
                continue
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live writer is still appending to it, or someone replays it
                    continue
                if not path.exists():  # deleted between our open and our lock
                    continue
                size = os.fstat(handle.fileno()).st_size
                rows = list(self._records(handle, path))
                for start in range(0, len(rows), batch_size):
                    insert(rows[start : start + batch_size])
                path.unlink()
            own = path.name.startswith(f"spill-{self._writer_id}-")
            with self._lock:
                self._folder_bytes = max(self._folder_bytes - size, 0)
                self.replayed += len(rows)
                if own:
                    self.own_pending = max(self.own_pending - len(rows), 0)
            log.info("request log: replayed %d spilled record(s) from %s", len(rows), path.name)
            return len(rows)
        return None

    def _records(self, handle: IO[str], path: Path) -> Iterator[Any]:
        for number, line in enumerate(handle, start=1):
            if not line.endswith("\n"):  # a torn last line (the process died mid-write): never accepted
                log.error("request log: %s line %d is incomplete; skipped", path.name, number)
                continue
            try:
                row = json.loads(line)
                row = {k: v for k, v in row.items() if k in self._field_names}
                row["created_at"] = datetime.fromisoformat(row["created_at"])
                yield self._record_type(**row)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("request log: %s line %d is unreadable (%s); skipped", path.name, number, exc)
