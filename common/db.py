"""Database plumbing every package shares: engines for SQLite and Postgres, UTC timestamps, JSON columns,
and additive schema evolution.

SQLite (a file in WAL mode, or `sqlite://` in memory for tests) and Postgres (`postgresql+psycopg://...`)
behave the same. Timestamps are stored as UTC and always come back timezone-aware (UTC); a naive datetime
is refused when written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    Table,
    TypeDecorator,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import StaticPool

__all__ = [
    "JSONType",
    "UTCDateTime",
    "add_missing_columns",
    "create_tables",
    "make_engine",
    "opened",
    "require_aware",
    "utcnow",
]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column stores)."""
    return datetime.now(UTC)


def require_aware(value: datetime, what: str = "timestamp") -> datetime:
    """`value` in UTC; a naive datetime is a `ValueError` naming `what`."""
    if value.tzinfo is None:
        raise ValueError(f"{what}={value!r} is a naive datetime: pass a timezone-aware (UTC) datetime")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and returned timezone-aware, on SQLite (naive text) and Postgres alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = require_aware(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
"""JSON on SQLite, JSONB on Postgres (indexable, compact)."""


def make_engine(
    url: str, *, schema: str | None = None, busy_timeout_s: float = 30.0, echo: bool = False
) -> Engine:
    """An engine for `url`: SQLite (file or `sqlite://` in memory) or Postgres (`postgresql+psycopg://`).

    SQLite: WAL journal, `busy_timeout`, `check_same_thread=False`, parent folder created; an in-memory
    URL uses one shared connection (tests only). Postgres: `pool_pre_ping`, connect/keepalive/TCP user
    timeouts (a partition fails fast; anything set in the URL's query wins); `schema` sets the
    `search_path` of every connection (lets several deployments or test runs share one database).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if schema is not None:
            raise ValueError("schema= is only supported on Postgres")
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": busy_timeout_s}
        if in_memory:
            engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool, echo=echo)
        else:
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args=connect_args, echo=echo)
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if not in_memory:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            finally:
                cursor.close()

        return engine
    if backend == "postgresql":
        pg_args: dict[str, Any] = {
            key: value
            for key, value in {
                "connect_timeout": 10,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": 30_000,
            }.items()
            if key not in parsed.query
        }
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise ValueError(f"invalid schema name {schema!r}: use lower-case letters, digits, '_'")
            pg_args["options"] = f"-csearch_path={schema}"
        return create_engine(url, connect_args=pg_args, pool_pre_ping=True, echo=echo)
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
        if schema is not None:
            raise ValueError("schema= applies to a URL, not to an existing Engine")
        yield db
        return
    engine = make_engine(db, schema=schema)
    try:
        yield engine
    finally:
        engine.dispose()


def add_missing_columns(engine: Engine, tables: Iterable[Table]) -> None:
    """Additive schema evolution: add the nullable columns that existing `tables` created by an older
    version lack (a missing required column is an error: migrate the database)."""
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    statements = []
    for table in tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"table {table.name!r} lacks the required column {column.name!r}: migrate the database"
                )
            kind = column.type.compile(dialect=engine.dialect)
            statements.append(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
    if statements:
        with engine.begin() as conn:
            for statement in statements:
                try:
                    with conn.begin_nested():
                        conn.exec_driver_sql(statement)
                except (OperationalError, ProgrammingError):
                    pass  # added concurrently by another process


def create_tables(engine: Engine, metadata: MetaData, tables: Iterable[Table] | None = None) -> None:
    """Create `tables` (default: all of `metadata`) where missing and add new nullable columns to older ones;
    safe to call repeatedly and from several processes at once."""
    chosen = list(tables) if tables is not None else list(metadata.sorted_tables)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT current_schema()").scalar() is None:
                raise RuntimeError("Postgres search_path names no existing schema: create the schema first")
    for attempt in range(3):
        try:
            metadata.create_all(engine, tables=chosen, checkfirst=True)
            break
        except (IntegrityError, ProgrammingError, OperationalError):
            # Another process created the same objects between our check and our CREATE.
            if attempt == 2:
                raise
    add_missing_columns(engine, chosen)
