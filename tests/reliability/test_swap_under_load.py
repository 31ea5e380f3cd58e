"""Hot-swap and rollback under load, over real HTTP on 127.0.0.1 (uvicorn + the real app, registry on
SQLite, FakeEngine streaming one word per 10 ms).

Concurrent streaming clients keep asking for `support` (its champion) while the admin API moves
`support@champion` v1 -> v2, rolls back, v1 -> v3, rolls back, ... Proves:
* 0 failed requests: every response is a 200 whose stream ends with `[DONE]` and carries no error event;
* every response's `x-tuneloop-served-by` names a version that was live (the champion) at some moment
  during that request - requests in flight finish on the version they started with;
* the swaps really happened under traffic (each version served some requests), every request was
  logged, and versions no longer wanted are unloaded once drained.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from reliability_harness import LiveServer, adapter_folder, admin_headers, build_runtime, make_config
from sqlalchemy import text

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]

CLIENTS = int(os.environ.get("TUNELOOP_SWAP_CLIENTS", "8"))
CYCLES = int(os.environ.get("TUNELOOP_SWAP_CYCLES", "4"))  # each: swap + rollback


@dataclass
class Served:
    start: float
    end: float
    served_by: str
    ok: bool
    detail: str = ""


@dataclass
class Move:
    """An alias move: the old version stops being live by `end`; the new one may be live from `start`."""

    start: float
    end: float
    from_ref: str
    to_ref: str


async def stream_clients(url: str, stop: threading.Event, clients: int) -> list[Served]:
    results: list[Served] = []

    async def one(index: int, client: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body = {
                "model": "support",
                "messages": [{"role": "user", "content": f"client {index} question {n}"}],
                "stream": True,
                "max_tokens": 12,
            }
            start = time.monotonic()
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    served_by = r.headers.get("x-tuneloop-served-by", "")
                    events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                ok = r.status_code == 200 and events[-1:] == ["data: [DONE]"]
                errors = [e for e in events[:-1] if "error" in json.loads(e[6:])]
                detail = "" if ok and not errors else f"{r.status_code} {events[-2:]} {errors[:1]}"
                results.append(Served(start, time.monotonic(), served_by, ok and not errors, detail))
            except httpx.HTTPError as exc:
                results.append(Served(start, time.monotonic(), "", False, f"{type(exc).__name__}: {exc}"))

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(one(i, client) for i in range(clients)))
    return results


def was_live(served: Served, initial: str, moves: list[Move]) -> bool:
    """True if `served.served_by` was the champion at some moment within [served.start, served.end]."""
    intervals: list[tuple[float, float]] = []
    live_from: float | None = float("-inf") if initial == served.served_by else None
    for move in moves:
        if move.to_ref == served.served_by and live_from is None:
            live_from = move.start
        if move.from_ref == served.served_by and live_from is not None:
            intervals.append((live_from, move.end))
            live_from = None
    if live_from is not None:
        intervals.append((live_from, float("inf")))
    return any(lo <= served.end and served.start <= hi for lo, hi in intervals)


def test_swaps_and_rollbacks_under_streaming_load_lose_nothing(
    tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    runtime = build_runtime(make_config(tmp_path / "home"), step_delay_s=0.01)
    registry = runtime.registry
    v1 = registry.register(adapter_folder(tmp_path, 1), "support", alias="champion")
    v2 = registry.register(adapter_folder(tmp_path, 2), "support")
    v3 = registry.register(adapter_folder(tmp_path, 3), "support")
    server = live_server(runtime)
    stop = threading.Event()
    out: dict[str, list[Served]] = {}
    load = threading.Thread(
        target=lambda: out.setdefault("results", asyncio.run(stream_clients(server.url, stop, CLIENTS)))
    )
    load.start()
    moves: list[Move] = []
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=server.url, headers=admin_headers(), timeout=60) as admin:
            current = v1.short_ref
            for cycle in range(CYCLES):
                target = (v2, v3)[cycle % 2]
                for method, path, body in (
                    ("PUT", "/admin/adapters/support/aliases/champion", {"version": target.version}),
                    ("POST", "/admin/adapters/support/rollback", {"alias": "champion"}),
                ):
                    start = time.monotonic()
                    r = admin.request(method, path, json=body)
                    assert r.status_code == 200, r.text
                    to_ref = f"support@{r.json()['to_version'][:12]}"
                    moves.append(Move(start, time.monotonic(), current, to_ref))
                    current = to_ref
                    time.sleep(0.4)
    finally:
        stop.set()
        load.join(60)
    results = out["results"]

    failed = [r.detail for r in results if not r.ok]
    assert failed == [], failed[:5]
    assert len(moves) == 2 * CYCLES and current == v1.short_ref
    stray = [r for r in results if not was_live(r, v1.short_ref, moves)]
    assert stray == [], stray[:5]
    served = {r.served_by for r in results}
    assert served == {v1.short_ref, v2.short_ref, v3.short_ref}  # the swaps happened under traffic

    assert runtime.request_log.flush(10)
    with runtime.db.session() as session:
        logged = session.execute(text("select count(*) from requests where served_name = 'support'")).scalar()
    assert logged == len(results)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and runtime.core.loaded_keys() != [v1.ref]:
        server.call(runtime.core.reconcile)
        time.sleep(0.1)
    assert runtime.core.loaded_keys() == [v1.ref]  # v2, v3 drained and unloaded
