"""The serving layer's database: schema (SQLAlchemy 2.x typed ORM), engine setup and sessions.

Owns every table the serving layer writes:

* `requests`, `feedback`, `scores` - the shared request log (column names are a contract: evals and
  monitoring read them with plain SQL / reflection, without importing this module);
* `adapter_versions`, `aliases`, `alias_events`, `experiments` - the adapter registry;
* `registry_state` - one row whose `generation` is bumped in the same transaction as every registry
  change, so replicas poll one cheap row to know when to reconcile;
* `staged_versions` - versions a hot-swap put into the desired set before moving an alias;
* `replicas` - replica heartbeats (what each replica has loaded or refused).

Tables are joined by value, without foreign keys, so the request log can be written and read on its own.
`create_schema` creates what is missing and adds new nullable columns to older tables.

SQLite (default, WAL mode) and Postgres (`postgresql+psycopg://...`) behave the same. Timestamps are
stored as UTC and always come back timezone-aware (UTC).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    insert,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "AdapterVersionRow",
    "AliasEventRow",
    "AliasRow",
    "Base",
    "Database",
    "ExperimentRow",
    "FeedbackRow",
    "RegistryStateRow",
    "ReplicaRow",
    "RequestRow",
    "ScoreRow",
    "StagedVersionRow",
    "create_schema",
    "make_engine",
    "utcnow",
]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
REGISTRY_STATE_ID = 1


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column stores)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and returned timezone-aware, on SQLite (naive text) and Postgres alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON on SQLite, JSONB on Postgres (indexable, compact).
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every serving table."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


# --------------------------------------------------------------------------- request log (shared schema)


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


class FeedbackRow(Base):
    """User feedback on one request (rating in 0..1, thumbs +1/-1, or a correction)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]
    rating: Mapped[float | None] = mapped_column(Float)
    thumbs: Mapped[int | None] = mapped_column(Integer)
    correction: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(64))


class ScoreRow(Base):
    """A scorer's score for one request (written by monitoring)."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    scorer: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


# --------------------------------------------------------------------------- adapter registry


class AdapterVersionRow(Base):
    """One immutable adapter version; `version` is the sha256 hex of `adapter_model.safetensors`."""

    __tablename__ = "adapter_versions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(256))
    base_fingerprint: Mapped[str | None] = mapped_column(String(128))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    target_modules: Mapped[list[Any]]
    size_bytes: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(Text)
    parent: Mapped[str | None] = mapped_column(String(330))
    dataset_hash: Mapped[str | None] = mapped_column(String(128))
    training_config: Mapped[dict[str, Any] | None]
    eval_results: Mapped[dict[str, Any] | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]


class AliasRow(Base):
    """A movable pointer `name@alias` -> version (e.g. `champion`, `challenger`)."""

    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class AliasEventRow(Base):
    """History of alias moves (for rollback and lineage). `kind`: 'set' | 'rollback' | 'delete'."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    alias: Mapped[str] = mapped_column(String(32))
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="set")
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]


class ExperimentRow(Base):
    """An A/B experiment: weighted arms (pinned versions) and an optional shadow model."""

    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    arms: Mapped[list[Any]]
    shadow: Mapped[str | None] = mapped_column(String(330))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    description: Mapped[str] = mapped_column(Text, default="")
    intercept: Mapped[str | None] = mapped_column(String(330), default=None)
    """A model name (e.g. an adapter name) whose traffic this experiment takes over (a canary)."""


class RegistryStateRow(Base):
    """Exactly one row (id=1); `generation` increases with every registry change."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class ReplicaRow(Base):
    """A serving replica's last heartbeat: the adapter versions it has loaded, at which generation."""

    __tablename__ = "replicas"

    replica_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    loaded: Mapped[list[Any]]
    generation: Mapped[int] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime]
    failed: Mapped[dict[str, Any] | None]  # "name@version" -> why the replica refused it


class StagedVersionRow(Base):
    """A version staged into the desired set without an alias (hot-swap: load everywhere, then switch).

    Stages expire, so a crashed swap cannot keep a version loaded forever."""

    __tablename__ = "staged_versions"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


# --------------------------------------------------------------------------- engine + schema


def make_engine(
    url: str, *, schema: str | None = None, busy_timeout_s: float = 30.0, echo: bool = False
) -> Engine:
    """An engine for `url`: SQLite (file or `sqlite://` in memory) or Postgres (`postgresql+psycopg://`).

    SQLite: WAL journal, `busy_timeout`, `check_same_thread=False`, parent folder created; an in-memory
    URL uses one shared connection (tests only). Postgres: `pool_pre_ping`, connect/keepalive/TCP user
    timeouts (a partition fails fast); `schema` sets the `search_path` of every connection (lets several
    deployments or test runs share one database).
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
        # a silent network partition must fail within seconds, not hang a writer for the kernel's TCP
        # timeout (minutes): connect timeout, keepalives, and a user timeout on unacknowledged data.
        # Anything set in the URL's query wins.
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


def create_schema(engine: Engine) -> None:
    """Create every table (and the single `registry_state` row) if missing; safe to call repeatedly and
    from several processes at once."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
            if schema is None:
                raise RuntimeError("Postgres search_path names no existing schema: create the schema first")
    for attempt in range(3):
        try:
            Base.metadata.create_all(engine, checkfirst=True)
            break
        except (IntegrityError, ProgrammingError, OperationalError):
            # Another process created the same objects between our check and our CREATE.
            if attempt == 2:
                raise
    _add_missing_columns(engine)
    with engine.begin() as conn:
        if conn.execute(select(RegistryStateRow.id)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(RegistryStateRow).values(
                            id=REGISTRY_STATE_ID, generation=0, updated_at=utcnow()
                        )
                    )
            except IntegrityError:
                pass  # a concurrent create_schema inserted it


def _add_missing_columns(engine: Engine) -> None:
    """Additive schema evolution: add nullable columns a table created by an older version lacks."""
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    statements = []
    for table in Base.metadata.sorted_tables:
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


class Database:
    """An engine plus a session factory. `Database("sqlite:///x.db")` creates the schema by default."""

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        create: bool = True,
        schema: str | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = make_engine(url_or_engine, schema=schema, busy_timeout_s=busy_timeout_s)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            create_schema(self.engine)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        """The URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on normal exit, rolled back on an exception."""
        with self.sessions.begin() as session:
            yield session

    def table_names(self) -> list[str]:
        """Tables present in the database (diagnostics, tests)."""
        return sorted(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"
