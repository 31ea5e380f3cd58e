"""The registry and the request log on a real Postgres (127.0.0.1:5432, or $TUNELOOP_TEST_POSTGRES_URL).

Each test run works in its own schema (`search_path`), dropped afterwards, so runs never see each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from serving.registry import AdapterRegistry, ArtifactStore, ConflictError, ModelNotFoundError
from serving.registry.testing import SMOLLM2_MODULES, write_adapter
from serving.request_log import FeedbackRecord, RequestLogWriter, RequestRecord
from serving.store import Database, FeedbackRow, RequestRow
from serving.testing import PostgresUnavailable, postgres_schema

pytestmark = pytest.mark.integration

URL = os.environ.get("TUNELOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    try:
        with postgres_schema(URL, "tl_test_") as schema:
            yield schema
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def db(pg_schema: str) -> Iterator[Database]:
    database = Database(URL, schema=pg_schema)
    yield database
    with database.engine.begin() as conn:  # leave the schema empty for the next test
        tables = ", ".join(f'"{t}"' for t in database.table_names())
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY")
        conn.exec_driver_sql("INSERT INTO registry_state (id, generation, updated_at) VALUES (1, 0, now())")
    database.dispose()


def registry_for(db: Database, tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(
        db, ArtifactStore(tmp_path / "adapters"), BASE, SMOLLM2_MODULES, 16, snapshot_ttl_s=None
    )


def test_tables_live_only_in_the_test_schema(db: Database, pg_schema: str) -> None:
    inspector = inspect(db.engine)
    assert "requests" in inspector.get_table_names(schema=pg_schema)
    assert "adapter_versions" in db.table_names()
    Database(URL, schema=pg_schema).dispose()  # create_schema again: idempotent
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar() == pg_schema
        assert conn.execute(text("SELECT count(*) FROM registry_state")).scalar() == 1
        kind = conn.execute(
            text(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = :s AND "
                "table_name = 'requests' AND column_name = 'tags'"
            ),
            {"s": pg_schema},
        ).scalar()
        assert kind == "jsonb"


def test_registry_round_trip(db: Database, tmp_path: Path) -> None:
    registry = registry_for(db, tmp_path)
    versions = [
        registry.register(
            write_adapter(tmp_path / f"a{s}", seed=s),
            "support",
            eval_results={"rouge": s / 10},
            metadata={"seed": s},
        )
        for s in range(3)
    ]
    a, b, c = versions
    assert registry.register(write_adapter(tmp_path / "again", seed=0), "support").version == a.version
    registry.set_alias("support", "champion", a.version[:8], actor="it")
    registry.set_alias("support", "champion", b.version[:8])
    registry.set_alias("support", "challenger", c.version)
    assert registry.resolve("support").served_version == b.version
    assert registry.rollback("support").version == a.version
    assert registry.resolve(f"support@{c.version[:10]}").alias is None
    exp = registry.create_experiment(
        "support-ab", [("support", 0.8), ("support@challenger", 0.2)], shadow=BASE
    )
    assert registry.resolve("support-ab").experiment == exp
    assert {v.ref for v in registry.desired_set()} == {a.ref, c.ref}
    with pytest.raises(ConflictError):
        registry.remove("support", c.version)
    registry.stop_experiment("support-ab")
    with pytest.raises(ModelNotFoundError):
        registry.resolve("support-ab")
    updated = registry.update_metadata("support", b.version, eval_results={"bleu": 0.3})
    assert updated.eval_results == {"rouge": 0.1, "bleu": 0.3}
    assert registry.remove("support", b.version).status == "retired"
    assert [v.version for v in registry.list("support")] == [c.version, a.version]
    assert registry.get("support", a.version).created_at.tzinfo is not None
    registry.stage("support", a.version, "swap-1")
    with pytest.raises(ConflictError):  # b (the only earlier champion) is retired
        registry.rollback_target("support")
    registry.unstage("swap-1")
    registry.heartbeat("r1", [a.ref, c.ref], registry.generation(), failed={b.ref: "smoke failed"})
    replica = registry.live_replicas()[0]
    assert replica.loaded == tuple(sorted([a.ref, c.ref])) and replica.failed == {b.ref: "smoke failed"}


def test_concurrent_alias_moves_are_serialized(db: Database, tmp_path: Path) -> None:
    registry = registry_for(db, tmp_path)
    versions = [registry.register(write_adapter(tmp_path / f"a{s}", seed=s), "support") for s in range(4)]
    start = registry.generation()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def mover(k: int) -> None:
        own = registry_for(db, tmp_path)  # separate instances, as separate processes would be
        barrier.wait()
        try:
            for i in range(10):
                own.set_alias("support", "champion", versions[(k + i) % 4].version, actor=f"t{k}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = registry.alias_history("support", "champion")
    # Every move saw the previous one: the history is one unbroken chain.
    for before, after in zip(history, history[1:], strict=False):
        assert after.from_version == before.to_version
    assert registry.resolve("support").served_version == history[-1].to_version
    assert registry.generation() == start + len(history)


def test_request_log_round_trip(db: Database) -> None:
    writer = RequestLogWriter(db, batch_size=200, flush_interval_s=0.05)

    def produce(k: int) -> None:
        for i in range(500):
            writer.log(
                RequestRecord(
                    id=f"cmpl-{k}-{i}",
                    endpoint="completions",
                    model_requested="support",
                    served_name="support",
                    prompt=f"p{i}",
                    status_code=200,
                    stream=bool(i % 2),
                    tags={"k": k},
                    latency_ms=1.5,
                )
            )

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fid = writer.log_feedback(FeedbackRecord("cmpl-3-499", rating=0.25, source="it"))
    assert writer.close(timeout=30)
    assert writer.stats().written == 2000
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(RequestRow)) == 2000
        row = session.get(RequestRow, "cmpl-2-7")
        assert row is not None and row.stream is True and row.tags == {"k": 2}
        assert row.created_at.tzinfo is not None
        feedback = session.get(FeedbackRow, fid)
        assert feedback is not None and feedback.rating == 0.25
    with db.engine.connect() as conn:  # how evals/monitoring read it: plain SQL
        count = conn.execute(text("SELECT count(*) FROM requests WHERE tags->>'k' = '1'")).scalar()
        assert count == 500
