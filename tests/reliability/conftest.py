"""Fixtures of the fault suite (see README.md): a fake base model on disk, replicas over real HTTP,
a fresh Postgres schema and a cuttable proxy to it, and the outage duration.

Durations: `--reliability-long` (or `TUNELOOP_RELIABILITY_LONG=1`) runs the outage scenarios at their full
length (30 s database outage); the default is a shorter outage that fits CI; `TUNELOOP_DB_OUTAGE_S`
overrides both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_harness import BASE, PG_URL, LiveServer, TcpProxy

from serving.registry.testing import SMOLLM2_MODULES
from serving.runtime import ServingRuntime
from serving.testing import PostgresUnavailable, postgres_schema


def long_mode(config: pytest.Config) -> bool:
    return bool(config.getoption("--reliability-long", default=False)) or os.environ.get(
        "TUNELOOP_RELIABILITY_LONG", ""
    ) not in ("", "0")


@pytest.fixture()
def outage_s(pytestconfig: pytest.Config) -> float:
    """How long the database stays unreachable: $TUNELOOP_DB_OUTAGE_S, else 30 s (long) or 8 s (CI)."""
    if value := os.environ.get("TUNELOOP_DB_OUTAGE_S"):
        return float(value)
    return 30.0 if long_mode(pytestconfig) else 8.0


@pytest.fixture()
def base_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A base-model folder the runtime accepts without loading weights (FakeEngine serves it)."""
    model = tmp_path / "models" / BASE
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setattr("serving.runtime.resolve_base_model", lambda spec: model)
    monkeypatch.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
    monkeypatch.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
    return model


@pytest.fixture()
def live_server() -> Iterator[Callable[[ServingRuntime], LiveServer]]:
    started: list[LiveServer] = []

    def start(runtime: ServingRuntime) -> LiveServer:
        server = LiveServer(runtime).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture()
def pg_schema() -> Iterator[str]:
    """A fresh Postgres schema (dropped afterwards); skips when Postgres is not reachable."""
    try:
        with postgres_schema(PG_URL, "tl_rel_") as schema:
            yield schema
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture()
def pg_proxy() -> Iterator[TcpProxy]:
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    yield proxy
    proxy.close()
