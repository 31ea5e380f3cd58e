"""Persistence of the closed loop: runs (one per retraining attempt), events (every transition with its
evidence and lineage links) and a lock (one loop per base model at a time).

SQLAlchemy Core on the same database as the request log (SQLite or Postgres); tables are created on
first use. A run's `data` JSON accumulates the artifacts of each step (drift report, training config,
training run id, adapter version, gate decision, experiment, A/B result), so a restarted loop resumes
from the last completed step.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitoring.store import connect

metadata = sa.MetaData()

loop_runs = sa.Table(
    "loop_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("loop", sa.String(128), nullable=False, index=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished", sa.Boolean, nullable=False, default=False),
    sa.Column("outcome", sa.String(32)),
    sa.Column("data", sa.JSON, nullable=False),
)

loop_events = sa.Table(
    "loop_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("loop", sa.String(128), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(48), nullable=False),
    sa.Column("from_state", sa.String(32)),
    sa.Column("to_state", sa.String(32)),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("evidence", sa.JSON),
)

loop_locks = sa.Table(
    "loop_locks",
    metadata,
    sa.Column("loop", sa.String(128), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class LockHeldError(RuntimeError):
    """Another live loop holds the lock for this base model."""


@dataclass
class LoopRun:
    id: str
    loop: str
    state: str
    started_at: datetime
    updated_at: datetime
    finished: bool
    outcome: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopEvent:
    id: int
    loop: str
    run_id: str | None
    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    message: str
    evidence: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "loop": self.loop,
            "run_id": self.run_id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "message": self.message,
            "evidence": self.evidence,
        }


class LoopStore:
    def __init__(self, db: str | Engine, loop: str) -> None:
        self.engine = connect(db) if isinstance(db, str) else db
        self.loop = loop
        metadata.create_all(self.engine, checkfirst=True)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    # ------------------------------------------------------------------ lock
    def acquire(self, stale_after_s: float = 60.0) -> None:
        """Take the loop lock (or a stale one); raise `LockHeldError` if a live loop holds it."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(loop_locks).where(loop_locks.c.loop == self.loop)).first()
            if row is None:
                conn.execute(loop_locks.insert().values(loop=self.loop, owner=self.owner, heartbeat_at=now))
                return
            beat = _aware(row.heartbeat_at)
            if row.owner != self.owner and now - beat < timedelta(seconds=stale_after_s):
                raise LockHeldError(f"loop {self.loop!r} is already running ({row.owner}, heartbeat {beat})")
            updated = conn.execute(
                loop_locks.update()
                .where(loop_locks.c.loop == self.loop, loop_locks.c.owner == row.owner)
                .values(owner=self.owner, heartbeat_at=now)
            )
            if updated.rowcount != 1:
                raise LockHeldError(f"loop {self.loop!r} lock was taken concurrently")

    def heartbeat(self) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                loop_locks.update()
                .where(loop_locks.c.loop == self.loop, loop_locks.c.owner == self.owner)
                .values(heartbeat_at=utcnow())
            )
        if updated.rowcount != 1:
            raise LockHeldError(f"lost the lock of loop {self.loop!r}")

    def release(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                loop_locks.delete().where(loop_locks.c.loop == self.loop, loop_locks.c.owner == self.owner)
            )

    # ------------------------------------------------------------------ runs
    def _run(self, row: Any) -> LoopRun:
        return LoopRun(
            row.id,
            row.loop,
            row.state,
            _aware(row.started_at),
            _aware(row.updated_at),
            bool(row.finished),
            row.outcome,
            dict(row.data or {}),
        )

    def new_run(self, state: str, data: dict[str, Any]) -> LoopRun:
        now = utcnow()
        run_id = f"loop-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.engine.begin() as conn:
            conn.execute(
                loop_runs.insert().values(
                    id=run_id,
                    loop=self.loop,
                    state=state,
                    started_at=now,
                    updated_at=now,
                    finished=False,
                    outcome=None,
                    data=_jsonable(data),
                )
            )
        return LoopRun(run_id, self.loop, state, now, now, False, None, data)

    def save(self, run: LoopRun) -> None:
        run.updated_at = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                loop_runs.update()
                .where(loop_runs.c.id == run.id)
                .values(
                    state=run.state,
                    updated_at=run.updated_at,
                    finished=run.finished,
                    outcome=run.outcome,
                    data=_jsonable(run.data),
                )
            )

    def open_run(self) -> LoopRun | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(loop_runs)
                .where(loop_runs.c.loop == self.loop, loop_runs.c.finished.is_(False))
                .order_by(loop_runs.c.started_at.desc())
            ).first()
        return self._run(row) if row is not None else None

    def runs(self, limit: int = 50) -> list[LoopRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(loop_runs)
                .where(loop_runs.c.loop == self.loop)
                .order_by(loop_runs.c.started_at.desc())
                .limit(limit)
            ).all()
        return [self._run(r) for r in rows]

    # ------------------------------------------------------------------ events
    def event(
        self,
        kind: str,
        message: str,
        *,
        run_id: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                loop_events.insert().values(
                    loop=self.loop,
                    run_id=run_id,
                    at=utcnow(),
                    kind=kind,
                    from_state=from_state,
                    to_state=to_state,
                    message=message,
                    evidence=_jsonable(evidence) if evidence else None,
                )
            )

    def events(self, run_id: str | None = None, limit: int = 1000) -> list[LoopEvent]:
        q = sa.select(loop_events).where(loop_events.c.loop == self.loop)
        if run_id is not None:
            q = q.where(loop_events.c.run_id == run_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(loop_events.c.id).limit(limit)).all()
        return [
            LoopEvent(
                r.id,
                r.loop,
                r.run_id,
                _aware(r.at),
                r.kind,
                r.from_state,
                r.to_state,
                r.message,
                r.evidence,
            )
            for r in rows
        ]
