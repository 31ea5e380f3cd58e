"""The serving layer's database: the adapter-registry tables, schema creation and sessions.

The request log (`requests`, `feedback`, `scores`) is declared in `common.log_schema` (shared with
monitoring, evals and training); this module declares the tables only serving uses, on the same `Base`:

* `adapter_versions`, `aliases`, `alias_events`, `experiments` - the adapter registry;
* `registry_state` - one row whose `generation` is bumped in the same transaction as every registry
  change, so replicas poll one cheap row to know when to reconcile;
* `staged_versions` - versions a hot-swap put into the desired set before moving an alias;
* `replicas` - replica heartbeats (what each replica has loaded or refused).

`create_schema` creates every table (log and registry) that is missing and adds new nullable columns to
older tables. Engines, UTC timestamps and JSON columns come from `common.db`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Float, Integer, String, Text, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from common.db import create_tables, make_engine, utcnow
from common.log_schema import Base, FeedbackRow, RequestRow, ScoreRow

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

REGISTRY_STATE_ID = 1


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


# --------------------------------------------------------------------------- schema + sessions


def create_schema(engine: Engine) -> None:
    """Create every table (and the single `registry_state` row) if missing; safe to call repeatedly and
    from several processes at once."""
    create_tables(engine, Base.metadata)
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
