"""Benchmark: requests lost in each fault scenario of the fault suite (issue 7, "fault figures").

Question: when a fault hits a replica under traffic, how many requests fail, and how many request-log
records are lost? Goal: 0 for swaps and the database outage.

Each scenario is the one in `tests/reliability/` (same code, imported from there), run once with its
figures recorded instead of asserted: a replica built from real components (the Litestar app over HTTP on
127.0.0.1, registry on SQLite or Postgres, artifacts on disk) with `FakeEngine` for the model. So the
figures measure tuneloop's own fault handling - not vLLM's speed. The real-engine scenarios (replica
kill, SIGTERM drain, two replicas) are measured elsewhere.

* `db_outage` - Postgres unreachable for `--outage-s` (default 30 s) through a cut loopback proxy while 4
  clients send chat requests (every 4th streamed), with a 500-record in-memory cap so that most of the
  outage spills to disk; sent / answered / failed, log rows written, lost (answered - rows), dropped,
  peak records in memory and on disk, records replayed from disk.
* `db_outage_no_spill` - 3 s with a 40-record cap and spilling off (`request_log_max_spill_bytes: 0`):
  what happens beyond the cap then (dropped and counted, never blocking).
* `swap_under_load` - 8 streaming clients while `support@champion` is swapped and rolled back 4 times each.
* `corrupt_adapter` - a swap to a version whose weights were changed on disk, refused, while unrelated
  traffic runs.
* `disk_full` - registration hits ENOSPC mid-copy (injected at the store's write step).
* `fuzz` - schemathesis over every operation of the OpenAPI document: requests and 5xx answers.

Run: `python -m benchmarks.fault_figures` (~2 minutes on 2 cores). Writes
benchmarks/results/fault_figures.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from benchmarks.common import environment, md_table, write_results
from serving.registry.testing import SMOLLM2_MODULES
from serving.testing import PostgresUnavailable, postgres_schema

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import reliability_harness as rh  # noqa: E402  (the fault suite's harness)


@contextlib.contextmanager
def fake_base_model(tmp: Path) -> Iterator[None]:
    model = tmp / "models" / rh.BASE
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with (
        mock.patch("serving.runtime.resolve_base_model", lambda spec: model),
        mock.patch("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES)),
        mock.patch("serving.runtime.base_model_fingerprint", lambda path: "f" * 64),
    ):
        yield


def db_outage(tmp: Path, outage_s: float, cap: int, clients: int, spill: bool = True) -> dict[str, Any]:
    from sqlalchemy.engine import make_url
    from test_db_outage import count_rows, run_outage, start_replica

    try:
        with postgres_schema(rh.PG_URL, "tl_bench_") as schema:
            url = make_url(rh.PG_URL)
            proxy = rh.TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
            servers: list[rh.LiveServer] = []
            try:

                def serve(runtime: Any) -> rh.LiveServer:
                    servers.append(rh.LiveServer(runtime).start())
                    return servers[-1]

                changes = {} if spill else {"request_log_max_spill_bytes": 0}
                server = start_replica(tmp, proxy, schema, serve, cap, **changes)
                result = run_outage(server, proxy, outage_s, clients=clients)
                rows = count_rows(schema)
            finally:
                for s in servers:
                    s.stop()
                proxy.close()
    except PostgresUnavailable:
        return {"skipped": f"Postgres not reachable at {rh.PG_URL}"}
    stats = result["stats"]
    answered = len(result["ids"])
    return {
        "outage_s": round(result["outage_s"], 1),
        "buffer_cap": cap,
        "spill": spill,
        "sent": answered + len(result["failures"]),
        "answered_200": answered,
        "failed": len(result["failures"]),
        "answered_during_outage": result["during"],
        "log_rows_written": len(rows),
        "log_lost": answered - len(rows & set(result["ids"])) - stats.dropped,
        "log_dropped_by_cap": stats.dropped,
        "peak_pending_records": result["peak_pending"],
        "peak_in_memory_records": result["peak_in_memory"],
        "peak_spilled_records": result["peak_spilled"],
        "replayed_from_disk": stats.replayed,
        "failed_db_writes_retried": stats.failed_flushes,
    }


def swap_under_load(tmp: Path) -> dict[str, Any]:
    from test_swap_under_load import Move, stream_clients, was_live

    runtime = rh.build_runtime(rh.make_config(tmp / "home"), step_delay_s=0.01)
    reg = runtime.registry
    v1 = reg.register(rh.adapter_folder(tmp, 1), "support", alias="champion")
    v2 = reg.register(rh.adapter_folder(tmp, 2), "support")
    v3 = reg.register(rh.adapter_folder(tmp, 3), "support")
    server = rh.LiveServer(runtime).start()
    stop = threading.Event()
    out: dict[str, Any] = {}
    load = threading.Thread(
        target=lambda: out.setdefault("r", asyncio.run(stream_clients(server.url, stop, 8)))
    )
    load.start()
    moves: list[Any] = []
    durations: list[float] = []
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=server.url, headers=rh.admin_headers(), timeout=60) as admin:
            current = v1.short_ref
            for cycle in range(4):
                target = (v2, v3)[cycle % 2]
                for method, path, body in (
                    ("PUT", "/admin/adapters/support/aliases/champion", {"version": target.version}),
                    ("POST", "/admin/adapters/support/rollback", {"alias": "champion"}),
                ):
                    start = time.monotonic()
                    r = admin.request(method, path, json=body)
                    durations.append(time.monotonic() - start)
                    to_ref = f"support@{r.json()['to_version'][:12]}" if r.status_code == 200 else current
                    moves.append(Move(start, time.monotonic(), current, to_ref))
                    current = to_ref
                    time.sleep(0.4)
    finally:
        stop.set()
        load.join(60)
        server.stop()
    results = out["r"]
    return {
        "sent": len(results),
        "failed": sum(not r.ok for r in results),
        "served_by_a_version_not_live_during_the_request": sum(
            not was_live(r, v1.short_ref, moves) for r in results
        ),
        "alias_moves": len(moves),
        "alias_move_s_mean": round(sum(durations) / len(durations), 3),
        "versions_served": len({r.served_by for r in results}),
    }


def corrupt_adapter(tmp: Path) -> dict[str, Any]:
    from test_corrupt_adapter import Background, flip_bytes

    runtime = rh.build_runtime(rh.make_config(tmp / "home"))
    reg = runtime.registry
    reg.register(rh.adapter_folder(tmp, 1), "support", alias="champion")
    reg.register(rh.adapter_folder(tmp, 5), "billing", alias="champion")
    v2 = reg.register(rh.adapter_folder(tmp, 2), "support")
    flip_bytes(Path(v2.uri))
    server = rh.LiveServer(runtime).start()
    try:
        with Background(server.url, [rh.BASE, "billing", "support"]) as background:
            time.sleep(0.5)
            r = httpx.put(
                f"{server.url}/admin/adapters/support/aliases/champion",
                json={"version": v2.version},
                headers=rh.admin_headers(),
                timeout=60,
            )
            time.sleep(0.5)
        champion = reg.get("support", "champion").version
    finally:
        server.stop()
    return {
        "swap_status": r.status_code,
        "swap_error_code": r.json().get("error", {}).get("code"),
        "alias_kept_previous_version": champion != v2.version,
        "sent": background.sent,
        "failed": len(background.errors),
    }


def disk_full(tmp: Path) -> dict[str, Any]:
    import errno
    import os

    import serving.registry.artifacts as artifacts
    from serving.registry.testing import write_adapter

    real_copy = artifacts._copy_file

    def copy_then_fill_disk(src: str, dst: str) -> None:
        if not dst.endswith(artifacts.WEIGHTS_FILE):
            real_copy(src, dst)
            return
        data = Path(src).read_bytes()
        with open(dst, "wb") as out:
            out.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    store = tmp / "store"
    incoming = tmp / "incoming"
    big = write_adapter(incoming / "big", base_model=rh.BASE, seed=7, hidden=512, layers=4)
    config = rh.make_config(tmp / "home", registry_root=str(store), adapter_import_roots=[str(incoming)])
    runtime = rh.build_runtime(config)
    server = rh.LiveServer(runtime).start()
    try:
        with mock.patch.object(artifacts, "_copy_file", copy_then_fill_disk):
            r = httpx.post(
                f"{server.url}/admin/adapters",
                json={"path": str(big), "name": "support", "alias": "champion"},
                headers=rh.admin_headers(),
                timeout=60,
            )
        rows = len(runtime.registry.list(include_retired=True))
    finally:
        server.stop()
    return {
        "status": r.status_code,
        "error_code": r.json().get("error", {}).get("code"),
        "version_rows_left": rows,
        "files_left_in_store": sum(1 for p in store.rglob("*") if p.is_file()),
    }


def fuzz(tmp: Path) -> dict[str, Any]:
    from test_api_fuzz import fuzz_all

    runtime = rh.build_runtime(rh.make_config(tmp / "home", swap_timeout_s=2))
    runtime.registry.register(rh.adapter_folder(tmp, 1), "support", alias="champion")
    runtime.registry.register(rh.adapter_folder(tmp, 2), "support", alias="challenger")
    runtime.registry.create_experiment("support-ab", [("support@champion", 0.5), ("support@challenger", 0.5)])
    server = rh.LiveServer(runtime).start()
    try:
        report = fuzz_all(server.url)
    finally:
        server.stop()
    statuses: dict[int, int] = {}
    for entry in report.values():
        for status, n in entry["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "operations_x_modes": len(report),
        "sent": sum(e["requests"] for e in report.values()),
        "server_errors_5xx": sum(len(e["server_errors"]) for e in report.values()),
        "statuses": dict(sorted(statuses.items())),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=30.0, help="database outage length (s)")
    args = parser.parse_args(argv)

    scenarios: dict[str, Callable[[Path], dict[str, Any]]] = {
        "db_outage": lambda t: db_outage(t, args.outage_s, cap=500, clients=4),
        "db_outage_no_spill": lambda t: db_outage(t, 3.0, cap=40, clients=3, spill=False),
        "swap_under_load": swap_under_load,
        "corrupt_adapter": corrupt_adapter,
        "disk_full": disk_full,
        "fuzz": fuzz,
    }
    figures: dict[str, dict[str, Any]] = {}
    for name, run in scenarios.items():
        with tempfile.TemporaryDirectory(prefix=f"tuneloop-fault-{name}-") as tmp, fake_base_model(Path(tmp)):
            started = time.monotonic()
            figures[name] = run(Path(tmp)) | {"wall_s": round(time.monotonic() - started, 1)}
        print(name, figures[name], flush=True)

    rows = []
    for name, f in figures.items():
        lost = f.get("log_lost", 0)
        rows.append(
            [
                name,
                f.get("sent", "-"),
                f.get("failed", f.get("server_errors_5xx", "-")),
                lost if "log_lost" in f else "-",
                f.get("log_dropped_by_cap", "-"),
                f.get("peak_spilled_records", "-"),
                f.get("wall_s"),
            ]
        )
    markdown = "\n\n".join(
        [
            "# Fault figures (FakeEngine, real app/registry/DB over loopback)",
            md_table(
                [
                    "scenario",
                    "requests sent",
                    "failed (5xx/errors)",
                    "log rows lost",
                    "log dropped (cap)",
                    "log records on disk (peak)",
                    "wall s",
                ],
                rows,
            ),
            "Details per scenario:",
            "\n".join(f"* `{name}`: {json.dumps(f)}" for name, f in figures.items()),
            "`db_outage` holds at most 500 records in memory; the rest of the outage's records go to the "
            "spill folder and are replayed when the database is back. `db_outage_no_spill` turns spilling "
            "off with a tiny cap (40 records): beyond it records are dropped and counted "
            "(`tuneloop_request_log_dropped`), never blocking or failing a request.",
        ]
    )
    paths = write_results("fault_figures", {"environment": environment(), "figures": figures}, markdown)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
