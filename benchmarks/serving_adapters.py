"""Benchmark: throughput with LoRA adapters — base only, one adapter, a 4-adapter mix (ratio to base).

Question: what does serving through adapters cost on tuneloop, and is that cost tuneloop's or vLLM's?
tuneloop is measured with the same load on the base model, on one adapter (every request) and on a mix
of four adapters (requests cycle over them, so every batch holds all four); the same three cells run on
bare vLLM (adapters passed with `--lora-modules`) in the same run as the reference for the ratios.

Adapters: four real peft LoRA adapters of the default model (r=16 on q/k/v/o, the training recipe's
default shape), random non-zero weights, made once per run. On tuneloop they are registered through the
admin API (`POST /admin/adapters`, alias `champion`) and addressed by name.

Load: 32 closed-loop clients streaming chat completions (temperature 0, max_tokens=64, a prompt that
makes the model talk long), a fixed number of requests per cell, after a warm-up on every model. The
base cell runs first and again last (its mean is the reference; the two show the drift of the machine).
Peak RSS of the server's process tree is sampled during the load (tuneloop with four adapters loaded).

Run: `python -m benchmarks.serving_adapters` (~25 minutes on 2 cores, LoRA decoding on CPU is slow;
`--quick` for a smoke run, `--no-baseline` to skip bare vLLM). Writes benchmarks/results/serving_adapters.json
and .md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AdminClient,
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
    wait_served_by,
    warm_up,
    workdir,
)
from serving.testing import make_peft_adapter

NAME = "serving_adapters"
ADAPTERS = ("ad0", "ad1", "ad2", "ad3")
WARM_TOKENS = 8
"""Output tokens of warm-up requests (every model once per client; short, LoRA decoding is slow on CPU)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: c=4, a few short requests")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare vLLM reference")
    add_quiet_args(p)
    add_priority_args(p)
    p.add_argument("--concurrency", type=int, default=None, help="clients (default 32)")
    p.add_argument("--requests", type=int, default=None, help="requests per cell (default 64)")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens per request (default 64)")
    p.add_argument(
        "--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick with --quick)"
    )
    return p.parse_args(argv)


def cells_for(base: str, concurrency: int, requests: int) -> list[Cell]:
    return [
        Cell("base", (base,), concurrency, requests),
        Cell("one-adapter", (ADAPTERS[0],), concurrency, requests),
        Cell("four-adapter-mix", ADAPTERS, concurrency, requests),
        Cell("base-again", (base,), concurrency, requests),
    ]


async def measure(
    server: ServerProcess,
    cells: list[Cell],
    max_tokens: int,
    warm_requests: int,
    *,
    register: dict[str, Path] | None,
    quiet: QuietPolicy | None = None,
) -> ServerRun:
    """Register adapters (tuneloop), warm every model up, run the cells; resources sampled throughout."""
    run = ServerRun(server=server.name, start_s=server.start_s)
    with ResourceMonitor(server) as mon:
        run.memory["idle_rss_gib"] = mon.peak_rss_bytes / 2**30
        if register is not None:
            admin = AdminClient(server.url)
            try:
                for name, folder in register.items():
                    version = await admin.register(folder, name, alias="champion")
                    await wait_served_by(server.url, name, f"{name}@{version['version'][:12]}")
                    log(f"registered {name}@{version['version'][:12]}")
            finally:
                await admin.aclose()
        models = sorted({m for c in cells for m in c.models})
        conc = max(c.concurrency for c in cells)
        await warm_up(
            server.url, models, concurrency=conc, requests=max(warm_requests, conc), max_tokens=WARM_TOKENS
        )
        for cell in cells:
            pss_after = 10.0 if cell.label == "four-adapter-mix" else None
            run.cells[cell.label] = await run_cell(
                server.url, cell, max_tokens=max_tokens, monitor=mon, pss_after_s=pss_after, quiet=quiet
            )
        run.memory.update(mon.summary())
    return run


def ratios(run: ServerRun) -> dict[str, Any]:
    base = [run.cells[k]["tokens_per_s"] for k in ("base", "base-again") if k in run.cells]
    ref = sum(base) / len(base)
    return {
        "base_tokens_per_s_mean": ref,
        "base_drift": ratio(run.cells["base-again"]["tokens_per_s"], run.cells["base"]["tokens_per_s"]),
        **{
            f"{k}_ratio": ratio(run.cells[k]["tokens_per_s"], ref)
            for k in ("one-adapter", "four-adapter-mix")
        },
    }


def report(
    runs: dict[str, ServerRun],
    cells: list[Cell],
    max_tokens: int,
    args: argparse.Namespace,
    env: dict[str, Any],
    load: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    summary = {k: ratios(r) for k, r in runs.items()}
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "max_tokens": max_tokens,
        "concurrency": cells[0].concurrency,
        "requests_per_cell": cells[0].requests,
        "adapters": {
            "count": len(ADAPTERS),
            "r": 16,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        },
        "environment": env,
        "load_before": load,
        "ratios": summary,
        "runs": {k: r.to_dict() for k, r in runs.items()},
    }
    md = [
        f"# Adapter throughput{' (quick smoke run)' if args.quick else ''}",
        "",
        f"{env['date_utc']}, commit {env['git_commit']}, {env['cpu_count']} CPUs, load average before "
        f"{load['loadavg_1_5_15']}. {cells[0].concurrency} closed-loop clients, {cells[0].requests} streamed "
        f"chat completions per cell, max_tokens={max_tokens}, temperature 0. Adapters: peft LoRA r=16 on "
        "q/k/v/o; engine max_loras 4, max_lora_rank 16. Ratios are to the mean of the two base cells.",
        "",
        "## Throughput",
        "",
    ]
    rows = []
    for server, run in runs.items():
        ref = summary[server]["base_tokens_per_s_mean"]
        for cell in cells:
            c = run.cells[cell.label]
            rows.append(
                [
                    server,
                    cell.label,
                    c["tokens_per_s"],
                    fmt(ratio(c["tokens_per_s"], ref), 3),
                    c["requests_per_s"],
                    c["ttft_ms_p50"],
                    c["ttft_ms_p99"],
                    c["e2e_ms_p50"],
                    c["failed"],
                    c["requests_short_of_max_tokens"],
                    c["resources"]["other_cores"],
                ]
            )
    md.append(
        md_table(
            [
                "server",
                "cell",
                "tok/s",
                "ratio to base",
                "req/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "e2e p50 ms",
                "failed",
                "short of max_tokens",
                "other CPU cores",
            ],
            rows,
            digits=2,
        )
    )
    if "tuneloop" in runs and "bare-vllm" in runs:
        md += ["", "## tuneloop relative to bare vLLM, per cell", ""]
        md.append(
            md_table(
                ["cell", "tuneloop / bare vLLM tok/s"],
                [
                    [
                        cell.label,
                        fmt(
                            ratio(
                                runs["tuneloop"].cells[cell.label]["tokens_per_s"],
                                runs["bare-vllm"].cells[cell.label]["tokens_per_s"],
                            ),
                            3,
                        ),
                    ]
                    for cell in cells
                ],
            )
        )
    md += ["", "## Memory (peak RSS summed over the server's process tree, during the load)", ""]
    md.append(
        md_table(
            ["server", "start s", "RSS after start GiB", "peak RSS GiB", "PSS during mix GiB"],
            [
                [
                    k,
                    r.start_s,
                    r.memory.get("idle_rss_gib"),
                    r.memory["peak_rss_gib"],
                    (r.memory.get("pss_snapshot") or {}).get("pss_gib"),
                ]
                for k, r in runs.items()
            ],
            digits=2,
        )
    )
    md += ["", f"Run: `python -m benchmarks.{NAME}` (`--quick` for a smoke run)."]
    return payload, "\n".join(md)


def run_server(
    server: ServerProcess,
    cells: list[Cell],
    max_tokens: int,
    warm_requests: int,
    register: dict[str, Path] | None,
    quiet: QuietPolicy | None,
) -> ServerRun:
    return measure_on(
        server, lambda: measure(server, cells, max_tokens, warm_requests, register=register, quiet=quiet)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = prepare_benchmark_model()
    base = model_path.name
    concurrency = args.concurrency or (4 if args.quick else 32)
    requests = args.requests or (8 if args.quick else 64)
    max_tokens = args.max_tokens or (16 if args.quick else 64)
    cells = cells_for(base, concurrency, requests)
    env = environment()
    load = machine_load()
    runs: dict[str, ServerRun] = {}
    with workdir("tuneloop-bench-adapters-") as wd:
        log("making adapters")
        made = {
            name: make_peft_adapter(
                model_path,
                wd / "adapters" / name,
                seed=i,
                r=16,
                target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
            )
            for i, name in enumerate(ADAPTERS)
        }
        server, setup = tuneloop_server(
            model_path, wd, nice=args.nice, ray_worker_niceness=args.ray_worker_niceness
        )
        incoming = {name: Path(shutil.copytree(src, setup.incoming / name)) for name, src in made.items()}
        runs["tuneloop"] = run_server(server, cells, max_tokens, 8, incoming, quiet_policy(args))
        if not args.no_baseline:
            bare = bare_vllm_server(model_path, wd, served_name=base, lora_modules=made, nice=args.nice)
            runs["bare-vllm"] = run_server(bare, cells, max_tokens, 8, None, quiet_policy(args))
    payload, md = report(runs, cells, max_tokens, args, env, load)
    return publish_results(NAME, payload, md, quick=args.quick, override=args.name)


if __name__ == "__main__":
    sys.exit(main())
