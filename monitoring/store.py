"""Monitoring's reads and writes of the shared request log (`common.log_schema` declares the tables):

* `connect(url, schema=...)` / `opened(...)` - engines (see `common.db.make_engine`);
* `load_requests` / `load_feedback` / `load_scored_pairs` - typed reads for the scorers;
* `insert_scores` - append rows to `scores`;
* `load_prompts` / `load_score_stream` - windows of prompts and score streams for the drift detectors;
* `load_corrections` - user-corrected answers (training data for the dataset builder).

Every datetime returned here is timezone-aware UTC, and every datetime passed in must be timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, insert, select

from common.db import make_engine, opened, require_aware, utcnow
from common.log_schema import (
    FeedbackEntry,
    LoggedRequest,
    ScoreRecord,
    feedback_from_row,
    feedback_table,
    merged_tags,
    request_from_row,
    requests_table,
    scores_table,
)

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
    "opened",
    "requests_table",
    "scores_table",
    "utcnow",
]

_IN_CHUNK = 500  # ids per IN (...) clause


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


def connect(url: str | Engine, *, schema: str | None = None) -> Engine:
    """An engine for `url` (see `common.db.make_engine`); an Engine is returned as is."""
    if isinstance(url, Engine):
        if schema is not None:
            raise ValueError("schema= applies to a URL, not to an existing Engine")
        return url
    return make_engine(url, schema=schema)


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    Tags sent with feedback (labels known only after the answer) are merged over the request's own.
    """
    t = requests_table
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(t.c.created_at >= require_aware(since, "since"))
    if until is not None:
        conditions.append(t.c.created_at < require_aware(until, "until"))
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
        rows = [request_from_row(row) for row in conn.execute(query)]
    return _with_feedback_tags(engine, rows)


def _with_feedback_tags(engine: Engine, rows: list[LoggedRequest]) -> list[LoggedRequest]:
    """Requests whose feedback carried tags (labels known after the answer) get them on top of their own."""
    if not rows:
        return rows
    f = feedback_table
    late: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for chunk in _chunks([r.id for r in rows]):
            query = (
                select(f.c.request_id, f.c.tags)
                .where(f.c.request_id.in_(chunk), f.c.tags.is_not(None))
                .order_by(f.c.created_at, f.c.id)
            )
            for request_id, tags in conn.execute(query):
                late.setdefault(request_id, []).append(tags)
    if not late:
        return rows
    return [replace(r, tags=merged_tags(r.tags, late[r.id])) if r.id in late else r for r in rows]


def load_feedback(engine: Engine, request_ids: Sequence[str]) -> dict[str, list[FeedbackEntry]]:
    """Feedback rows per request id (oldest first)."""
    out: dict[str, list[FeedbackEntry]] = {}
    t = feedback_table
    with engine.connect() as conn:
        for chunk in _chunks(list(request_ids)):
            query = select(t).where(t.c.request_id.in_(chunk)).order_by(t.c.created_at, t.c.id)
            for row in conn.execute(query):
                entry = feedback_from_row(row)
                out.setdefault(entry.request_id, []).append(entry)
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
        conditions.append(r.c.created_at >= require_aware(since, "since"))
    if until is not None:
        conditions.append(r.c.created_at < require_aware(until, "until"))
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
        conditions.append(f.c.created_at >= require_aware(since, "since"))
    if served_name is not None:
        conditions.append(r.c.served_name == served_name)
    query = (
        select(r, f.c.correction, f.c.tags.label("feedback_tags"), f.c.created_at.label("corrected_at"))
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
            request = request_from_row(row)
            latest[request.id] = CorrectedExample(
                request_id=request.id,
                messages=request.messages,
                response=request.response,
                correction=correction,
                served_name=request.served_name,
                served_version=request.served_version,
                tags=merged_tags(request.tags, [row._mapping["feedback_tags"]]),
                corrected_at=row._mapping["corrected_at"],
            )
    return list(latest.values())
