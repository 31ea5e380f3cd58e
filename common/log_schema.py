"""The request log, declared once: the `requests`, `feedback` and `scores` tables and their row types.

Serving writes `requests` and `feedback`, monitoring writes `scores`; monitoring, evals, training and the
demo read all three. Every package uses these classes (ORM for sessions, `.__table__` / the `*_table`
names for Core queries); nobody reflects the live database or restates a column.

`Base` is the declarative base of every tuneloop table (the serving registry declares its tables on it
too); `create_log_tables` creates only the three log tables. Tables are joined by value, without foreign
keys, so the request log can be written and read on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Float, Integer, Row, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import JSONType, UTCDateTime, create_tables

__all__ = [
    "Base",
    "FeedbackEntry",
    "FeedbackRow",
    "LoggedRequest",
    "RequestRow",
    "ScoreRecord",
    "ScoreRow",
    "create_log_tables",
    "feedback_from_row",
    "feedback_table",
    "log_tables",
    "merged_tags",
    "message_text",
    "request_from_row",
    "requests_table",
    "scores_table",
]


class Base(DeclarativeBase):
    """Declarative base of every tuneloop table."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


class RequestRow(Base):
    """One served request (a shadow copy is its own row with `shadow_of` set)."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    model_requested: Mapped[str] = mapped_column(String(256))
    served_name: Mapped[str] = mapped_column(String(256), index=True)
    served_version: Mapped[str | None] = mapped_column(String(64))
    experiment: Mapped[str | None] = mapped_column(String(64), index=True)
    arm: Mapped[str | None] = mapped_column(String(256))
    shadow_of: Mapped[str | None] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(256))
    prompt: Mapped[str] = mapped_column(Text)
    """A JSON list of messages (chat) or the plain prompt text (completions)."""
    response: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    stream: Mapped[bool]
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    tags: Mapped[dict[str, Any] | None]
    """The request's `metadata` (slice keys, references) as the client sent it."""
    response_format: Mapped[str | None] = mapped_column(Text)
    """The request's output constraint as JSON: its `response_format` (`json_object` / `json_schema`), or
    `{"structured_outputs": {...}}` for vLLM's extension (choice, regex, grammar, json); None: free text."""
    tools: Mapped[str | None] = mapped_column(Text)
    """Chat `tools` and `tool_choice` as JSON (`{"tool_choice": ..., "tools": [...]}`); None without tools."""
    tool_calls: Mapped[str | None] = mapped_column(Text)
    """Tool calls answered (`[{"name", "arguments"}]`, one such list per choice when n > 1); None if none."""


class FeedbackRow(Base):
    """User feedback on one request (rating in 0..1, thumbs +1/-1, or a correction)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]
    rating: Mapped[float | None] = mapped_column(Float)
    thumbs: Mapped[int | None] = mapped_column(Integer)
    correction: Mapped[str | None] = mapped_column(Text)
    """The right answer: a training target, and the `reference` scorer's reference for the request."""
    source: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[dict[str, Any] | None]
    """Labels known only after the answer (the slice, a reference...); they win over the request's tags."""


class ScoreRow(Base):
    """A scorer's score for one request (written by monitoring)."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    scorer: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


requests_table: Table = RequestRow.__table__  # type: ignore[assignment]
feedback_table: Table = FeedbackRow.__table__  # type: ignore[assignment]
scores_table: Table = ScoreRow.__table__  # type: ignore[assignment]
log_tables: tuple[Table, ...] = (requests_table, feedback_table, scores_table)


def create_log_tables(engine: Engine) -> None:
    """Create the three log tables where missing (and add new nullable columns to older ones)."""
    create_tables(engine, Base.metadata, log_tables)


# --------------------------------------------------------------------------- typed rows


def message_text(content: Any) -> str:
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
    latency_ms: float | None = None

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
                return message_text(message.get("content"))
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
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreRecord:
    """One row to write into `scores`."""

    request_id: str
    scorer: str
    score: float
    details: dict[str, Any] | None = None
    created_at: datetime | None = None


def _json_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):  # a driver that hands JSON back as text
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def merged_tags(request_tags: Any, feedback_tags: Any) -> dict[str, Any]:
    """A request's tags with its feedback's tags on top (pass feedback tags oldest first: the newest wins)."""
    merged = _json_object(request_tags)
    for tags in feedback_tags:
        merged.update(_json_object(tags))
    return merged


def request_from_row(row: Row[Any]) -> LoggedRequest:
    """A `LoggedRequest` from a result row that selected the `requests` columns."""
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
        tags=_json_object(m["tags"]),
        experiment=m["experiment"],
        arm=m["arm"],
        shadow_of=m["shadow_of"],
        user_id=m["user_id"],
        model_requested=m["model_requested"],
        latency_ms=m["latency_ms"],
    )


def feedback_from_row(row: Row[Any]) -> FeedbackEntry:
    """A `FeedbackEntry` from a result row that selected the `feedback` columns."""
    m = row._mapping
    return FeedbackEntry(
        id=int(m["id"]),
        request_id=m["request_id"],
        created_at=m["created_at"],
        rating=m["rating"],
        thumbs=m["thumbs"],
        correction=m["correction"],
        source=m["source"],
        tags=_json_object(m["tags"]),
    )
