"""Database unavailable while traffic flows: a replica whose registry and request log live on a real
Postgres, reached through a loopback TCP proxy that the test cuts (listener closed, open connections
reset) and restores.

Proves:
* serving does not depend on the database being up: every request during the outage is answered (base
  model and an adapter, plain and streaming), because routing runs on the in-memory snapshot;
* what needs the database (feedback, the admin API) answers a retryable 503 `database_unavailable`
  during the outage (before the fix: 500) and works again after it;
* request-log records are buffered in memory while the database is down and written after it comes
  back: rows in `requests` == requests answered, ids identical, nothing dropped;
* memory is bounded: records held in memory never exceed `request_log_max_buffer`;
* beyond that cap (second test) the overflow goes to the spill folder on disk and is replayed when the
  database is back: still every answered request has its row, nothing dropped, memory bounded;
* with spilling turned off (`request_log_max_spill_bytes: 0`, third test) the hot path still never blocks
  or fails, and the overflow is dropped and counted (`tuneloop_request_log_dropped`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_harness import (
    BASE,
    PG_URL,
    LiveServer,
    TcpProxy,
    adapter_folder,
    admin_headers,
    build_runtime,
    make_config,
    proxied_url,
)
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]


def count_rows(schema: str) -> set[str]:
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("select id from requests"))}
    finally:
        engine.dispose()


async def drive(
    url: str,
    *,
    seconds: float,
    clients: int,
    models: list[str],
    on_tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """`clients` loops sending chat requests (every 4th streamed) for `seconds`; returns what came back."""
    ids: list[str] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    async def one_client(index: int, client: httpx.AsyncClient) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {
                "model": models[(index + n) % len(models)],
                "messages": [{"role": "user", "content": f"client {index} request {n}: where is my order?"}],
                "max_tokens": 8,
                "stream": n % 4 == 0,
            }
            try:
                r = await client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                ids.append(r.headers["x-request-id"])
                if body["stream"] and not r.text.rstrip().endswith("data: [DONE]"):
                    failures.append("stream did not finish")
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.02)

    async def ticker() -> None:
        while time.monotonic() < deadline:
            if on_tick is not None:
                on_tick()
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(ticker(), *(one_client(i, client) for i in range(clients)))
    return {"ids": ids, "failures": failures}


def start_replica(
    tmp_path: Path,
    proxy: TcpProxy,
    schema: str,
    live_server: Callable[..., LiveServer],
    cap: int,
    **changes: Any,
) -> LiveServer:
    config = make_config(
        tmp_path / "home", database_url=proxied_url(proxy, schema), request_log_max_buffer=cap, **changes
    )
    runtime = build_runtime(config)
    runtime.registry.register(adapter_folder(tmp_path, 1), "support", alias="champion")
    return live_server(runtime)


def run_outage(server: LiveServer, proxy: TcpProxy, outage_s: float, clients: int) -> dict[str, Any]:
    """Traffic before (1 s), during (`outage_s`) and after (2 s) a database outage."""
    writer = server.runtime.request_log
    peak = {"pending": 0, "in_memory": 0, "spilled": 0}

    def sample() -> None:
        stats = writer.stats()
        peak["pending"] = max(peak["pending"], stats.pending)
        peak["in_memory"] = max(peak["in_memory"], stats.pending - stats.spilled)
        peak["spilled"] = max(peak["spilled"], stats.spilled)

    models = [BASE, "support", "support@champion"]
    before = asyncio.run(drive(server.url, seconds=1.0, clients=clients, models=models))
    assert writer.flush(10), writer.stats()
    proxy.cut()
    cut_at = time.monotonic()
    feedback = {"id": before["ids"][0], "thumbs": 1}
    probes = {  # calls that need the database answer a retryable 503 while it is down
        "feedback_during": httpx.post(f"{server.url}/v1/feedback", json=feedback, timeout=30),
        "admin_during": httpx.get(f"{server.url}/admin/adapters", headers=admin_headers(), timeout=30),
    }
    during = asyncio.run(drive(server.url, seconds=outage_s, clients=clients, models=models, on_tick=sample))
    failed_flushes = writer.stats().failed_flushes
    proxy.restore()
    outage = time.monotonic() - cut_at
    after = asyncio.run(drive(server.url, seconds=2.0, clients=clients, models=models, on_tick=sample))
    flushed = writer.flush(30)
    probes["feedback_after"] = httpx.post(f"{server.url}/v1/feedback", json=feedback, timeout=30)
    return {
        "probes": {name: r.status_code for name, r in probes.items()},
        "probe_codes": {name: r.json().get("error", {}).get("code") for name, r in probes.items()},
        "ids": before["ids"] + during["ids"] + after["ids"],
        "during": len(during["ids"]),
        "failures": before["failures"] + during["failures"] + after["failures"],
        "peak_pending": peak["pending"],
        "peak_in_memory": peak["in_memory"],
        "peak_spilled": peak["spilled"],
        "failed_flushes_during": failed_flushes,
        "flushed": flushed,
        "outage_s": outage,
        "stats": writer.stats(),
    }


def test_db_outage_buffers_request_log_and_loses_nothing(
    tmp_path: Path,
    base_model: Path,
    pg_schema: str,
    pg_proxy: TcpProxy,
    live_server: Callable[..., LiveServer],
    outage_s: float,
) -> None:
    cap = 5000
    server = start_replica(tmp_path, pg_proxy, pg_schema, live_server, cap)
    result = run_outage(server, pg_proxy, outage_s, clients=4)

    assert result["failures"] == []  # serving never depended on the database
    assert result["during"] > 0
    assert result["probes"] == {"feedback_during": 503, "admin_during": 503, "feedback_after": 200}
    assert result["probe_codes"]["feedback_during"] == "database_unavailable"
    assert result["failed_flushes_during"] > 0, "the outage was not real: no write failed"
    assert result["peak_pending"] >= result["during"] * 0.9  # records waited in memory during the outage
    assert result["peak_pending"] <= cap and result["peak_spilled"] == 0  # it all fitted in memory
    assert result["flushed"], result["stats"]
    stats = result["stats"]
    assert stats.dropped == 0 and stats.rejected == 0 and stats.pending == 0
    rows = count_rows(pg_schema)
    assert rows == set(result["ids"])  # every answered request has its row, and only those


def test_beyond_the_buffer_cap_records_spill_to_disk_and_none_is_lost(
    tmp_path: Path,
    base_model: Path,
    pg_schema: str,
    pg_proxy: TcpProxy,
    live_server: Callable[..., LiveServer],
) -> None:
    cap = 40
    server = start_replica(tmp_path, pg_proxy, pg_schema, live_server, cap)
    result = run_outage(server, pg_proxy, 3.0, clients=3)

    assert result["failures"] == []
    assert result["during"] > cap
    assert result["peak_in_memory"] <= cap  # memory bounded
    assert result["peak_spilled"] >= result["during"] - cap - 5  # the overflow went to disk
    assert result["flushed"], result["stats"]
    stats = result["stats"]
    assert stats.dropped == 0 and stats.rejected == 0 and stats.pending == 0 and stats.spilled == 0
    assert stats.replayed >= result["peak_spilled"]
    assert count_rows(pg_schema) == set(result["ids"])  # nothing lost, nothing twice
    assert not list((tmp_path / "home" / "request-log-spill").glob("spill-*.jsonl"))  # replayed, removed


def test_without_spilling_records_beyond_the_cap_are_dropped_and_counted_never_blocking(
    tmp_path: Path,
    base_model: Path,
    pg_schema: str,
    pg_proxy: TcpProxy,
    live_server: Callable[..., LiveServer],
) -> None:
    cap = 40
    server = start_replica(tmp_path, pg_proxy, pg_schema, live_server, cap, request_log_max_spill_bytes=0)
    result = run_outage(server, pg_proxy, 3.0, clients=3)

    assert result["failures"] == []  # a full buffer never fails or blocks a request
    stats = result["stats"]
    assert result["during"] > cap
    assert result["peak_pending"] <= cap  # memory bounded
    assert stats.dropped > 0
    rows = count_rows(pg_schema)
    assert len(rows) + stats.dropped == len(result["ids"])  # every record is either written or counted
    metrics = httpx.get(f"{server.url}/metrics").text
    assert re.search(rf'tuneloop_request_log_dropped\{{replica="[^"]+"\}} {float(stats.dropped)}', metrics)


def test_a_replica_stopped_during_the_outage_hands_its_records_to_the_next_one(
    tmp_path: Path,
    base_model: Path,
    pg_schema: str,
    pg_proxy: TcpProxy,
    live_server: Callable[..., LiveServer],
) -> None:
    server = start_replica(tmp_path, pg_proxy, pg_schema, live_server, cap=50)
    before = asyncio.run(drive(server.url, seconds=1.0, clients=2, models=[BASE]))
    assert server.runtime.request_log.flush(10)
    pg_proxy.cut()
    during = asyncio.run(drive(server.url, seconds=2.0, clients=3, models=[BASE, "support"]))
    assert during["failures"] == [] and len(during["ids"]) > 50  # past the memory cap: some on disk
    started = time.monotonic()
    server.stop()  # shutdown during the outage: what is in memory goes to disk too
    assert time.monotonic() - started < 20  # within Serve's default graceful shutdown (20 s)
    spill = tmp_path / "home" / "request-log-spill"
    assert list(spill.glob("spill-*.jsonl"))
    pg_proxy.restore()
    # Its replacement (same home, database back) replays the records on its own.
    url = proxied_url(pg_proxy, pg_schema)
    live_server(build_runtime(make_config(tmp_path / "home", database_url=url, request_log_max_buffer=50)))
    expected = set(before["ids"]) | set(during["ids"])
    deadline = time.monotonic() + 60
    while count_rows(pg_schema) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count_rows(pg_schema) == expected  # every answered request has its row, none twice
    assert not list(spill.glob("spill-*.jsonl"))
