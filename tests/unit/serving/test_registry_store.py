"""serving.store on SQLite: schema names/columns other packages rely on, idempotent creation, WAL, UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from serving.store import (
    Database,
    FeedbackRow,
    RegistryStateRow,
    RequestRow,
    create_schema,
    make_engine,
    utcnow,
)

SHARED_COLUMNS = {
    "requests": {
        "id",
        "created_at",
        "endpoint",
        "model_requested",
        "served_name",
        "served_version",
        "experiment",
        "arm",
        "shadow_of",
        "user_id",
        "prompt",
        "response",
        "status_code",
        "error",
        "stream",
        "latency_ms",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "tags",
        "response_format",
        "tools",
        "tool_calls",
    },
    "feedback": {"id", "request_id", "created_at", "rating", "thumbs", "correction", "source", "tags"},
    "scores": {"id", "request_id", "scorer", "score", "details", "created_at"},
    "adapter_versions": {
        "name",
        "version",
        "base_model",
        "base_fingerprint",
        "rank",
        "alpha",
        "target_modules",
        "size_bytes",
        "uri",
        "parent",
        "dataset_hash",
        "training_config",
        "eval_results",
        "metadata",
        "status",
        "created_at",
    },
    "aliases": {"name", "alias", "version", "updated_at"},
    "alias_events": {"id", "name", "alias", "from_version", "to_version", "kind", "actor", "reason", "at"},
    "experiments": {
        "name",
        "arms",
        "shadow",
        "status",
        "created_at",
        "stopped_at",
        "description",
        "intercept",
    },
    "registry_state": {"id", "generation", "updated_at"},
    "replicas": {"replica_id", "loaded", "generation", "heartbeat_at", "failed"},
    "staged_versions": {"token", "name", "version", "created_at", "expires_at"},
}


def test_schema_has_the_agreed_tables_and_columns(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    inspector = inspect(db.engine)
    assert set(db.table_names()) == set(SHARED_COLUMNS)
    for table, columns in SHARED_COLUMNS.items():
        assert {c["name"] for c in inspector.get_columns(table)} == columns, table
    assert inspector.get_pk_constraint("adapter_versions")["constrained_columns"] == ["name", "version"]
    assert inspector.get_pk_constraint("aliases")["constrained_columns"] == ["name", "alias"]
    assert any(ix["column_names"] == ["request_id"] for ix in inspector.get_indexes("feedback"))


def test_create_schema_is_idempotent_and_seeds_one_state_row(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/nested/dir/t.db")  # parent folders are created
    for _ in range(3):
        create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(select(RegistryStateRow.id, RegistryStateRow.generation)).all() == [(1, 0)]
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_create_schema_adds_new_nullable_columns_to_old_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    with engine.begin() as conn:  # a `replicas` table as an older release created it
        conn.exec_driver_sql(
            "CREATE TABLE replicas (replica_id VARCHAR(128) PRIMARY KEY, loaded JSON NOT NULL, "
            "generation INTEGER NOT NULL, heartbeat_at DATETIME NOT NULL)"
        )
        conn.exec_driver_sql("INSERT INTO replicas VALUES ('r1', '[]', 3, '2026-01-01 00:00:00.000000')")
    create_schema(engine)
    assert {c["name"] for c in inspect(engine).get_columns("replicas")} == SHARED_COLUMNS["replicas"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT replica_id, failed FROM replicas").all() == [("r1", None)]


def test_timestamps_round_trip_as_utc(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    local = datetime(2026, 11, 26, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with db.session() as session:
        session.add(FeedbackRow(request_id="r1", created_at=local, rating=1.0))
    with db.session() as session:
        row = session.scalars(select(FeedbackRow)).one()
        assert row.created_at == local and row.created_at.tzinfo is not None
        assert row.created_at.utcoffset() == timedelta(0) and row.created_at.hour == 12
    with db.engine.connect() as conn:  # what evals/monitoring see through plain SQL
        assert (
            conn.execute(text("SELECT created_at FROM feedback")).scalar().startswith("2026-11-26 12:00:00")
        )
    with pytest.raises(Exception, match="naive"), db.session() as session:
        session.add(FeedbackRow(request_id="r2", created_at=datetime(2026, 1, 1), rating=1.0))
        session.flush()


def test_session_rolls_back_on_error(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    with pytest.raises(RuntimeError), db.session() as session:
        session.add(FeedbackRow(request_id="r1", created_at=utcnow(), thumbs=1))
        session.flush()
        raise RuntimeError("boom")
    with db.session() as session:
        assert session.scalars(select(RequestRow)).all() == []
        assert session.scalars(select(FeedbackRow)).all() == []


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_engine("mysql://x@localhost/db")
    with pytest.raises(ValueError, match="schema"):
        make_engine("postgresql+psycopg://postgres@127.0.0.1/test", schema="bad; DROP TABLE x")
    with pytest.raises(ValueError, match="Postgres"):
        make_engine("sqlite://", schema="x")


def test_in_memory_sqlite_is_shared_across_threads() -> None:
    import threading

    db = Database("sqlite://")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with db.session() as session:
                session.add(FeedbackRow(request_id="t", created_at=utcnow(), thumbs=1))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert errors == []
    with db.session() as session:
        assert len(session.scalars(select(FeedbackRow)).all()) == 1
