"""Monitoring's view of the shared request log: Core table definitions, typed rows, reads and score writes.

The `requests`, `feedback` and `scores` tables are owned by `serving.store` (it creates them); their column
names are a contract (see COMMON.md). This module mirrors that contract with SQLAlchemy Core so monitoring
can read and write the same database without importing `serving`:

* `connect(url, schema=...)` - an engine for SQLite or Postgres (a Postgres `schema` sets `search_path`);
* `load_requests` / `load_feedback` / `load_scored_pairs` - typed reads for the scorers;
* `insert_scores` - append rows to `scores`;
* `load_prompts` / `load_score_stream` - windows of prompts and score streams for the drift detectors;
* `load_corrections` - user-corrected answers (training data for the dataset builder).

Timestamps are UTC: SQLite stores them naive (as `serving.store` does), Postgres as `timestamptz`; every
datetime returned here is timezone-aware UTC, and every datetime passed in must be timezone-aware.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Dialect,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

__all__ = [
    "CorrectedExample",
    "FeedbackEntry",
    "LoggedRequest",
    "ScoreRecord",
    "connect",
    "feedback_table",
    "insert_scores",
    "load_corrections",
    "load_feedback",
    "load_prompts",
    "load_requests",
    "load_score_stream",
    "load_scores",
    "load_scored_pairs",
    "metadata",
    "opened",
    "requests_table",
    "scores_table",
    "utcnow",
]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_IN_CHUNK = 500  # ids per IN (...) clause


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _require_aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what}={value!r} is a naive datetime: pass a timezone-aware (UTC) datetime")
    return value.astimezone(UTC)


class _UTCDateTime(TypeDecorator[datetime]):
    """UTC datetimes: naive on SQLite (the format serving writes), `timestamptz` on Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _require_aware(value, "timestamp")
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_JSON = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData()

requests_table = Table(
    "requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", _UTCDateTime(), nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("model_requested", String(256), nullable=False),
    Column("served_name", String(256), nullable=False),
    Column("served_version", String(64)),
    Column("experiment", String(64)),
    Column("arm", String(256)),
    Column("shadow_of", String(64)),
    Column("user_id", String(256)),
    Column("prompt", Text, nullable=False),
    Column("response", Text),
    Column("status_code", Integer, nullable=False),
    Column("error", Text),
    Column("stream", Boolean, nullable=False),
    Column("latency_ms", Float),
    Column("ttft_ms", Float),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("finish_reason", String(32)),
    Column("tags", _JSON),
)
"""Mirror of `serving.store.RequestRow` (read only)."""

feedback_table = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("created_at", _UTCDateTime(), nullable=False),
    Column("rating", Float),
    Column("thumbs", Integer),
    Column("correction", Text),
    Column("source", String(64)),
)
"""Mirror of `serving.store.FeedbackRow` (read only)."""

scores_table = Table(
    "scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("scorer", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("details", _JSON),
    Column("created_at", _UTCDateTime(), nullable=False),
)
"""Mirror of `serving.store.ScoreRow` (monitoring writes it)."""


# --------------------------------------------------------------------------- typed rows


def _message_text(content: Any) -> str:
    """Text of a chat message's `content` (a string, or a list of OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if p)
    return "" if content is None else str(content)


@dataclass(frozen=True)
class LoggedRequest:
    """One row of `requests`, with the prompt decoded."""

    id: str
    created_at: datetime
    endpoint: str
    served_name: str
    served_version: str | None
    prompt: str
    """As stored: a JSON list of messages (chat) or plain text (completions)."""
    response: str | None
    status_code: int = 200
    finish_reason: str | None = None
    completion_tokens: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    arm: str | None = None
    shadow_of: str | None = None
    user_id: str | None = None
    model_requested: str = ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages (a completions prompt becomes one user message)."""
        if self.endpoint.startswith("chat"):
            try:
                decoded = json.loads(self.prompt)
            except (ValueError, TypeError):
                return [{"role": "user", "content": self.prompt}]
            if isinstance(decoded, list):
                return [m for m in decoded if isinstance(m, dict)]
        return [{"role": "user", "content": self.prompt}]

    @property
    def user_text(self) -> str:
        """The last user turn as text (what the user asked; what drift detection embeds)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _message_text(message.get("content"))
        return self.prompt if not self.endpoint.startswith("chat") else ""

    @property
    def ok(self) -> bool:
        """True when the request was served (2xx); failed requests carry no model output to score."""
        return 200 <= self.status_code < 300

    @property
    def version_key(self) -> str:
        """`served_name@served_version` (`@base` when no adapter version)."""
        return f"{self.served_name}@{self.served_version or 'base'}"


@dataclass(frozen=True)
class FeedbackEntry:
    """One row of `feedback`."""

    id: int
    request_id: str
    created_at: datetime
    rating: float | None = None
    thumbs: int | None = None
    correction: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ScoreRecord:
    """One row to write into `scores`."""

    request_id: str
    scorer: str
    score: float
    details: dict[str, Any] | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class CorrectedExample:
    """A served answer a user corrected: the correction is a training target for the prompt."""

    request_id: str
    messages: list[dict[str, Any]]
    response: str | None
    correction: str
    served_name: str
    served_version: str | None
    tags: dict[str, Any]
    corrected_at: datetime


# --------------------------------------------------------------------------- engine


def connect(url: str | Engine, *, schema: str | None = None, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for `url` (SQLite file or memory, or `postgresql+psycopg://`); an Engine is returned as is.

    `schema` (Postgres only) sets the `search_path`, as `serving.store.make_engine` does, so both packages
    see the same tables when pointed at the same URL and schema.
    """
    if isinstance(url, Engine):
        if schema is not None:
            raise ValueError("schema= applies to a URL, not to an existing Engine")
        return url
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if schema is not None:
            raise ValueError("schema= is only supported on Postgres")
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        args: dict[str, Any] = {"check_same_thread": False, "timeout": busy_timeout_s}
        if in_memory:
            engine = create_engine(url, connect_args=args, poolclass=StaticPool)
        else:
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args=args)
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            finally:
                cursor.close()

        return engine
    if backend == "postgresql":
        pg_args: dict[str, Any] = {}
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise ValueError(f"invalid schema name {schema!r}: use lower-case letters, digits, '_'")
            pg_args["options"] = f"-csearch_path={schema}"
        return create_engine(url, connect_args=pg_args, pool_pre_ping=True)
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path.db or postgresql+psycopg://user@host/db"
    )


@contextmanager
def opened(db: str | Engine, *, schema: str | None = None) -> Iterator[Engine]:
    """An engine for a URL (disposed on exit) or the given Engine (left open: the caller owns it).

    Pass an Engine for an in-memory SQLite database: each URL-opened engine would see a fresh one.
    """
    if isinstance(db, Engine):
        yield connect(db, schema=schema)
        return
    engine = connect(db, schema=schema)
    try:
        yield engine
    finally:
        engine.dispose()


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tags(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):  # a driver that hands JSON back as text
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def _request_from_row(row: Any) -> LoggedRequest:
    m = row._mapping
    return LoggedRequest(
        id=m["id"],
        created_at=m["created_at"],
        endpoint=m["endpoint"],
        served_name=m["served_name"],
        served_version=m["served_version"],
        prompt=m["prompt"],
        response=m["response"],
        status_code=int(m["status_code"]),
        finish_reason=m["finish_reason"],
        completion_tokens=m["completion_tokens"],
        tags=_tags(m["tags"]),
        experiment=m["experiment"],
        arm=m["arm"],
        shadow_of=m["shadow_of"],
        user_id=m["user_id"],
        model_requested=m["model_requested"],
    )


# --------------------------------------------------------------------------- reads


def load_requests(
    engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    served_name: str | None = None,
    served_version: str | None = None,
    any_version: bool = True,
    include_shadow: bool = True,
    ok_only: bool = False,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[LoggedRequest]:
    """Requests in `[since, until)`, oldest first (or newest first), optionally for one served version.

    `served_version=None` with `any_version=False` selects the base model's rows (`served_version IS NULL`).
    """
    t = requests_table
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(t.c.created_at >= _require_aware(since, "since"))
    if until is not None:
        conditions.append(t.c.created_at < _require_aware(until, "until"))
    if served_name is not None:
        conditions.append(t.c.served_name == served_name)
    if served_version is not None:
        conditions.append(t.c.served_version == served_version)
    elif not any_version:
        conditions.append(t.c.served_version.is_(None))
    if not include_shadow:
        conditions.append(t.c.shadow_of.is_(None))
    if ok_only:
        conditions.append(and_(t.c.status_code >= 200, t.c.status_code < 300))
    order = (t.c.created_at.desc(), t.c.id.desc()) if newest_first else (t.c.created_at, t.c.id)
    query = select(t).where(and_(*conditions)).order_by(*order)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_request_from_row(row) for row in conn.execute(query)]


def load_feedback(engine: Engine, request_ids: Sequence[str]) -> dict[str, list[FeedbackEntry]]:
    """Feedback rows per request id (oldest first)."""
    out: dict[str, list[FeedbackEntry]] = {}
    t = feedback_table
    with engine.connect() as conn:
        for chunk in _chunks(list(request_ids)):
            query = select(t).where(t.c.request_id.in_(chunk)).order_by(t.c.created_at, t.c.id)
            for row in conn.execute(query):
                m = row._mapping
                out.setdefault(m["request_id"], []).append(
                    FeedbackEntry(
                        id=int(m["id"]),
                        request_id=m["request_id"],
                        created_at=m["created_at"],
                        rating=m["rating"],
                        thumbs=m["thumbs"],
                        correction=m["correction"],
                        source=m["source"],
                    )
                )
    return out


def load_scored_pairs(
    engine: Engine, request_ids: Sequence[str], scorers: Iterable[str]
) -> set[tuple[str, str]]:
    """The `(request_id, scorer)` pairs that already have a score."""
    names = list(scorers)
    t = scores_table
    found: set[tuple[str, str]] = set()
    if not names:
        return found
    with engine.connect() as conn:
        for chunk in _chunks(list(request_ids)):
            query = select(t.c.request_id, t.c.scorer).where(t.c.request_id.in_(chunk), t.c.scorer.in_(names))
            found.update((r, s) for r, s in conn.execute(query))
    return found


def insert_scores(engine: Engine, records: Sequence[ScoreRecord]) -> int:
    """Append score rows in one transaction; returns how many were written."""
    if not records:
        return 0
    now = utcnow()
    rows = [
        {
            "request_id": r.request_id,
            "scorer": r.scorer,
            "score": float(r.score),
            "details": r.details,
            "created_at": r.created_at or now,
        }
        for r in records
    ]
    with engine.begin() as conn:
        conn.execute(insert(scores_table), rows)
    return len(rows)


def load_scores(
    engine: Engine, request_ids: Sequence[str], scorers: Iterable[str] | None = None
) -> list[tuple[str, str, float]]:
    """`(request_id, scorer, score)` for the given requests (all scorers unless named)."""
    t = scores_table
    names = list(scorers) if scorers is not None else None
    out: list[tuple[str, str, float]] = []
    with engine.connect() as conn:
        for chunk in _chunks(list(request_ids)):
            query = select(t.c.request_id, t.c.scorer, t.c.score).where(t.c.request_id.in_(chunk))
            if names is not None:
                query = query.where(t.c.scorer.in_(names))
            out.extend((r, s, float(v)) for r, s, v in conn.execute(query))
    return out


def load_prompts(
    engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    served_name: str | None = None,
    served_version: str | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[LoggedRequest]:
    """Served (2xx, non-shadow) requests of a window whose user text is non-empty: a drift window.

    `newest_first=True` with `limit` gives "the last N requests" (returned oldest first); rows with an
    empty user turn are dropped after the limit, so a window may hold slightly fewer than `limit`.
    """
    rows = load_requests(
        engine,
        since=since,
        until=until,
        served_name=served_name,
        served_version=served_version,
        include_shadow=False,
        ok_only=True,
        limit=limit,
        newest_first=newest_first,
    )
    kept = [r for r in rows if r.user_text.strip()]
    return sorted(kept, key=lambda r: (r.created_at, r.id))


def load_score_stream(
    engine: Engine,
    scorer: str,
    *,
    served_name: str | None = None,
    served_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[tuple[datetime, str, float]]:
    """`(request created_at, request_id, score)` of one scorer, in request order: a stream to watch."""
    r, s = requests_table, scores_table
    conditions: list[ColumnElement[bool]] = [s.c.scorer == scorer]
    if since is not None:
        conditions.append(r.c.created_at >= _require_aware(since, "since"))
    if until is not None:
        conditions.append(r.c.created_at < _require_aware(until, "until"))
    if served_name is not None:
        conditions.append(r.c.served_name == served_name)
    if served_version is not None:
        conditions.append(r.c.served_version == served_version)
    query = (
        select(r.c.created_at, r.c.id, s.c.score)
        .select_from(s.join(r, r.c.id == s.c.request_id))
        .where(and_(*conditions))
        .order_by(r.c.created_at, r.c.id, s.c.id)
    )
    with engine.connect() as conn:
        return [(at, rid, float(v)) for at, rid, v in conn.execute(query)]


def load_corrections(
    engine: Engine,
    *,
    since: datetime | None = None,
    served_name: str | None = None,
) -> list[CorrectedExample]:
    """Every feedback correction (latest per request) joined with its request: training targets."""
    r, f = requests_table, feedback_table
    conditions: list[ColumnElement[bool]] = [f.c.correction.is_not(None)]
    if since is not None:
        conditions.append(f.c.created_at >= _require_aware(since, "since"))
    if served_name is not None:
        conditions.append(r.c.served_name == served_name)
    query = (
        select(r, f.c.correction, f.c.created_at.label("corrected_at"))
        .select_from(f.join(r, r.c.id == f.c.request_id))
        .where(and_(*conditions))
        .order_by(f.c.created_at, f.c.id)
    )
    latest: dict[str, CorrectedExample] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            correction = (row._mapping["correction"] or "").strip()
            if not correction:
                continue
            request = _request_from_row(row)
            latest[request.id] = CorrectedExample(
                request_id=request.id,
                messages=request.messages,
                response=request.response,
                correction=correction,
                served_name=request.served_name,
                served_version=request.served_version,
                tags=request.tags,
                corrected_at=row._mapping["corrected_at"],
            )
    return list(latest.values())
