"""Benchmark: what an idle tuneloop replica costs the rest of the machine.

Question: with no traffic, how much CPU does `tuneloop serve` take, and how much slower does a CPU-bound
neighbour (the loop's training run next to the service, in the demo) run beside it? Every call into
vLLM's multiprocess executor keeps its worker process busy-polling its message queue for a second
afterwards (vLLM's `SpinCondition`); tuneloop used to ask the engine which adapters it holds every
heartbeat (1 s), so an idle replica's worker never stopped spinning. It now asks after a load or
eviction and otherwise every `serving.engine_check_refresh_s` (30 s).

Cells, one run: `no server` (the neighbour alone: the reference); vLLM's own OpenAI server idle; tuneloop
with one replica and with two, each with `engine_check_refresh_s: 0` (ask every heartbeat: the behaviour
before) and with the default, and with one replica under Ray Serve's own control-loop interval (0.1 s;
`tuneloop serve` sets 0.5 s). Per server cell, after the server is ready and a settle time: the server
process tree's CPU over an idle window (cores = CPU seconds per wall second), then the neighbour's work
rate during a window of the same length (relative to `no server`). With two replicas, registering
`--adapters` versions through the admin API is timed too (each registration reconciles on a replica).

Neighbour: one child process (started before any server, so its imports never compete) multiplying
384x384 float32 matrices with 2 torch threads for each window.

Run: `python -m benchmarks.serving_idle_cost` (`--quick`: shorter windows, fewer registrations).
Writes benchmarks/results/serving_idle_cost(.json|.md) (`_quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import child_process
from benchmarks.common import (
    AdminClient,
    ResourceMonitor,
    ServerProcess,
    bare_vllm_server,
    environment,
    fmt,
    log,
    machine_load,
    md_table,
    measure_on,
    median,
    ms,
    percentile,
    prepare_benchmark_model,
    publish_results,
    ratio,
    tuneloop_server,
    workdir,
)
from benchmarks.serving_many_adapters import write_adapters
from tuneloop.commands.serve import RAY_ENV_DEFAULTS

NAME = "serving_idle_cost"
MODULE = "benchmarks.serving_idle_cost"
MATRIX = 384


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter windows, fewer registrations")
    p.add_argument("--window", type=float, default=None, help="idle and neighbour window, s (default 30)")
    p.add_argument("--settle", type=float, default=None, help="wait after ready, s (default 15)")
    p.add_argument("--adapters", type=int, default=None, help="registrations with 2 replicas (default 40)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def neighbour() -> None:
    """In the child: for each window length read from stdin, multiply matrices that long and report
    multiplications per second (torch is imported once, before any server runs)."""
    import torch

    torch.set_num_threads(2)
    a = torch.rand(MATRIX, MATRIX)
    b = torch.rand(MATRIX, MATRIX)
    child_process.report(None, "READY")
    for line in sys.stdin:
        seconds = float(line)
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            a = torch.tanh(a @ b)
            done += 1
        child_process.report(done / elapsed)


class Neighbour:
    """The neighbour process, started once: `rate(seconds)` runs one window in it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--child"],
            cwd=child_process.ROOT,
            env={**os.environ, **child_process.CHILD_ENV},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read("READY")

    def _read(self, tag: str) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(f"{tag} "):
                return json.loads(line[len(tag) + 1 :])
        raise RuntimeError(f"the neighbour process ended ({self.proc.wait()}) before reporting {tag}")

    def rate(self, seconds: float) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        return float(self._read(child_process.RESULT))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


async def register_all(url: str, folders: list[Path]) -> list[float]:
    """Register each folder as a version of its own name; each call's seconds."""
    admin = AdminClient(url)
    times = []
    try:
        for folder in folders:
            t0 = time.perf_counter()
            await admin.register(folder, folder.name)
            times.append(time.perf_counter() - t0)
    finally:
        await admin.aclose()
    return times


def measure_server(
    server: ServerProcess, args: argparse.Namespace, nb: Neighbour, alone: float, folders: list[Path] | None
) -> dict[str, Any]:
    """Start `server`, settle, measure its idle cores and the neighbour beside it, time registrations."""
    return measure_on(server, lambda: idle_cell(server, args, nb, alone, folders))


async def idle_cell(
    server: ServerProcess, args: argparse.Namespace, nb: Neighbour, alone: float, folders: list[Path] | None
) -> dict[str, Any]:
    log(f"settling {args.settle:.0f} s")
    with ResourceMonitor(server) as monitor:
        await asyncio.sleep(args.settle)
        monitor.start_window()
        await asyncio.sleep(args.window)
        idle = monitor.end_window()
        monitor.start_window()
        rate = await asyncio.to_thread(nb.rate, args.window)
        beside = monitor.end_window()
    out: dict[str, Any] = {
        "start_s": server.start_s,
        "idle_server_cores": idle.server_cores,
        "idle_by_process": idle.server_cores_by_process,
        "neighbour_rate": rate,
        "neighbour_ratio": ratio(rate, alone),
        "server_cores_beside_neighbour": beside.server_cores,
    }
    if folders:
        times = await register_all(server.url, folders)
        out["register"] = {
            "n": len(times),
            "total_s": sum(times),
            "p50_ms": ms(median(times)),
            "p90_ms": ms(percentile(times, 90)),
            "max_ms": ms(max(times)),
        }
    log(
        f"{server.name}: idle {idle.server_cores:.2f} cores, neighbour {rate:.1f}/s "
        f"({fmt(ratio(rate, alone), 3)} of alone)"
    )
    return out


def tuneloop_cell(
    model_path: Path,
    wd: Path,
    args: argparse.Namespace,
    nb: Neighbour,
    alone: float,
    *,
    replicas: int,
    refresh_s: float,
    env: dict[str, str],
) -> dict[str, Any]:
    server, setup = tuneloop_server(
        model_path, wd, num_replicas=replicas, serving={"engine_check_refresh_s": refresh_s}, extra_env=env
    )
    names = [f"t{i:03d}" for i in range(args.adapters)]
    folders = write_adapters(wd / "src", model_path.name, setup.incoming, names) if replicas > 1 else None
    return measure_server(server, args, nb, alone, folders)


CONTROL_LOOP_ENV = "RAY_SERVE_CONTROL_LOOP_INTERVAL_S"
RAY_DEFAULT_CONTROL_LOOP = {CONTROL_LOOP_ENV: "0.1"}
"""Ray Serve's own control-loop interval (`tuneloop serve` sets `RAY_ENV_DEFAULTS`' unless the environment
does)."""
CONTROL_LOOP_CELL = (
    "tuneloop, 1 replica, ask after loads, "
    f"Serve control loop {RAY_DEFAULT_CONTROL_LOOP[CONTROL_LOOP_ENV]} s (Ray's default)"
)
CELLS: list[tuple[str, int, float, dict[str, str]]] = [
    ("tuneloop, 1 replica, ask every heartbeat (before)", 1, 0.0, {}),
    ("tuneloop, 1 replica, ask after loads (now)", 1, 30.0, {}),
    (CONTROL_LOOP_CELL, 1, 30.0, RAY_DEFAULT_CONTROL_LOOP),
    ("tuneloop, 2 replicas, ask every heartbeat (before)", 2, 0.0, {}),
    ("tuneloop, 2 replicas, ask after loads (now)", 2, 30.0, {}),
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        neighbour()
        return 0
    args.window = args.window or (10.0 if args.quick else 30.0)
    args.settle = args.settle if args.settle is not None else (5.0 if args.quick else 15.0)
    args.adapters = args.adapters or (10 if args.quick else 40)
    model_path = prepare_benchmark_model()
    env, load = environment(), machine_load()
    nb = Neighbour()
    try:
        cells = measure(model_path, args, nb)
    finally:
        nb.close()
    payload = {"env": env, "machine_load_before": load, "args": vars(args), "cells": cells}
    return publish_results(NAME, payload, report(cells, args, env, load), quick=args.quick)


def measure(model_path: Path, args: argparse.Namespace, nb: Neighbour) -> dict[str, dict[str, Any]]:
    log("neighbour alone")
    alone = nb.rate(args.window)
    cells: dict[str, dict[str, Any]] = {"no server": {"neighbour_rate": alone, "neighbour_ratio": 1.0}}
    with workdir("tuneloop-bench-idle-") as wd:
        cells["vLLM's own server"] = measure_server(
            bare_vllm_server(model_path, wd, served_name=model_path.name), args, nb, alone, None
        )
        for i, (label, replicas, refresh_s, extra_env) in enumerate(CELLS):
            cells[label] = tuneloop_cell(
                model_path,
                wd / f"tuneloop-{i}",
                args,
                nb,
                alone,
                replicas=replicas,
                refresh_s=refresh_s,
                env=extra_env,
            )
    log("neighbour alone, again")
    again = nb.rate(args.window)
    cells["no server (after)"] = {"neighbour_rate": again, "neighbour_ratio": ratio(again, alone)}
    return cells


def gain(now: dict[str, Any], before: dict[str, Any]) -> str:
    return fmt(ratio(now["neighbour_rate"], before["neighbour_rate"]), 2)


def report(cells: dict[str, dict[str, Any]], args: argparse.Namespace, env: dict[str, Any], load: Any) -> str:
    rows = []
    for label, c in cells.items():
        reg = c.get("register")
        rows.append(
            [
                label,
                fmt(c.get("idle_server_cores"), 2),
                fmt(c.get("neighbour_rate"), 1),
                fmt(c.get("neighbour_ratio"), 3),
                "–"
                if reg is None
                else f"{fmt(reg['total_s'])} s ({fmt(reg['p50_ms'], 0)} / {fmt(reg['max_ms'], 0)})",
            ]
        )
    before1 = cells["tuneloop, 1 replica, ask every heartbeat (before)"]
    now1 = cells["tuneloop, 1 replica, ask after loads (now)"]
    before2 = cells["tuneloop, 2 replicas, ask every heartbeat (before)"]
    now2 = cells["tuneloop, 2 replicas, ask after loads (now)"]
    md = [
        "# What an idle tuneloop replica costs the machine",
        "",
        f"{env['date_utc']}, commit {env['git_commit']}, {env['cpu_count']} CPUs, load average before "
        f"{load['loadavg_1_5_15']}. Idle window {args.window:g} s after a {args.settle:g} s settle; "
        "neighbour: "
        f"{MATRIX}x{MATRIX} float32 matmuls on 2 torch threads for {args.window:g} s; "
        f"{args.adapters} registrations through the admin API with 2 replicas.",
        "",
        md_table(
            [
                "cell",
                "idle server cores",
                "neighbour matmuls/s",
                "neighbour vs alone",
                f"register {args.adapters} (p50 / max ms)",
            ],
            rows,
        ),
        "",
        f"Neighbour beside an idle replica, now / before: **{gain(now1, before1)}×** (1 replica), "
        f"**{gain(now2, before2)}×** (2 replicas); "
        f"registering {args.adapters} adapters on 2 replicas, before / now: "
        f"**{fmt(ratio(before2['register']['total_s'], now2['register']['total_s']), 2)}×**.",
    ]
    ctl = cells.get(CONTROL_LOOP_CELL)
    if ctl is not None:
        ours = os.environ.get(CONTROL_LOOP_ENV, RAY_ENV_DEFAULTS[CONTROL_LOOP_ENV])
        ray_default = RAY_DEFAULT_CONTROL_LOOP[CONTROL_LOOP_ENV]
        md += [
            "",
            f"Ray Serve's control loop every {ours} s (what `tuneloop serve` ran with) against Ray's "
            f"{ray_default} s, 1 replica: "
            f"idle server cores {fmt(now1.get('idle_server_cores'), 3)} against "
            f"{fmt(ctl.get('idle_server_cores'), 3)}; neighbour **{gain(now1, ctl)}×**. "
            f"By process (cores, top 6), {ours} s: "
            + ", ".join(f"{k} {v}" for k, v in list((now1.get("idle_by_process") or {}).items())[:6])
            + f"; {ray_default} s: "
            + ", ".join(f"{k} {v}" for k, v in list((ctl.get("idle_by_process") or {}).items())[:6])
            + ".",
        ]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
