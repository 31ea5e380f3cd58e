"""Benchmark: many adapters per base model — 100 registered versions, Zipf-distributed requests, 8 resident.

Question: can one replica serve far more adapter versions than it keeps loaded, with every request
answered by the version it asked for, and what do the cold loads cost? tuneloop (`tuneloop serve`: Ray
Serve + vLLM on CPU, one replica, `max_loras=4`, `max_cpu_loras=8`) gets 100 LoRA versions registered
through the admin API without aliases (so none is pinned); requests address them as
`name@<version prefix>`, which loads a cold version on first use and evicts the least recently used.

Cells (same load, closed loop): `single` — every request to one adapter (the reference); `zipf` —
each request picks adapter i with probability ∝ 1/(i+1)^s (s=1.1 by default), in a fixed seeded order.
Reported: throughput of `zipf` relative to `single`, failed requests, requests served by another version
than asked (must be 0), cold loads and evictions during the cell, the resident-set hit rate
(`tuneloop_adapter_lookups_total`), cold-load p50/p99 (estimated from the
`tuneloop_adapter_cold_load_seconds` histogram, linear within a bucket) and the peak resident count.

Adapters: numpy-written LoRA adapters with the base's real module shapes (r=8 on q/v of all 30 layers;
`serving.registry.testing.write_adapter`), different seeds → different versions; no torch needed.

Run: `python -m benchmarks.serving_many_adapters` (`--quick`: 100 adapters, fewer and shorter requests).
Writes benchmarks/results/serving_many_adapters(.json|.md) (`_quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import (
    AdminClient,
    environment,
    fmt,
    http_client,
    log,
    machine_load,
    md_table,
    measure_on,
    prepare_benchmark_model,
    publish_results,
    ratio,
    run_closed_loop,
    stream_chat,
    summarize,
    tuneloop_server,
    workdir,
)
from serving.registry.testing import write_adapter

NAME = "serving_many_adapters"
SMOLLM2_SHAPES = {"q_proj": (576, 576), "v_proj": (576, 192)}
PROMPT = "Tell me a short story about a lighthouse."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer, shorter requests")
    p.add_argument("--adapters", type=int, default=100, help="registered adapter versions (default 100)")
    p.add_argument("--resident", type=int, default=8, help="max_cpu_loras: versions resident (default 8)")
    p.add_argument("--max-loras", type=int, default=4, help="adapters in one batch (default 4)")
    p.add_argument("--concurrency", type=int, default=None, help="clients (default 8; quick 4)")
    p.add_argument("--requests", type=int, default=None, help="requests per cell (default 200; quick 40)")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens per request (default 32)")
    p.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent (default 1.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="results file name (default serving_many_adapters[_quick])")
    return p.parse_args(argv)


def zipf_sequence(n_models: int, n_requests: int, s: float, seed: int) -> list[int]:
    weights = [1.0 / (i + 1) ** s for i in range(n_models)]
    return random.Random(seed).choices(range(n_models), weights=weights, k=n_requests)


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        out.setdefault(m.group("name"), []).append((labels, float(m.group("value"))))
    return out


def metric(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, ()) if all(lab.get(k) == x for k, x in labels.items()))


def histogram_quantile(
    before: dict[str, list[tuple[dict[str, str], float]]],
    after: dict[str, list[tuple[dict[str, str], float]]],
    name: str,
    q: float,
) -> float | None:
    """The q-quantile (0..1) of a histogram's observations between two scrapes (linear in a bucket)."""

    def buckets(s: dict[str, list[tuple[dict[str, str], float]]]) -> dict[float, float]:
        return {float(lab["le"]): v for lab, v in s.get(f"{name}_bucket", ()) if "le" in lab}

    a, b = buckets(after), buckets(before)
    counts = sorted((le, a[le] - b.get(le, 0.0)) for le in a)
    if not counts or counts[-1][1] <= 0:
        return None
    rank = q * counts[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in counts:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width > 0 else 1.0)
        prev_le, prev_count = le, count
    return prev_le


async def run_cell(
    url: str, models: list[str], expected: dict[str, str], concurrency: int, max_tokens: int
) -> dict[str, Any]:
    order = list(models)
    peak_resident = 0
    stop = False

    async def watch(client: httpx.AsyncClient) -> None:
        nonlocal peak_resident
        while not stop:
            samples = scrape((await client.get(f"{url}/metrics")).text)
            peak_resident = max(peak_resident, int(metric(samples, "tuneloop_loaded_adapters")))
            await asyncio.sleep(0.25)

    async def one(client: httpx.AsyncClient, idx: int, seq: int) -> Any:
        model = order.pop(0)
        return await stream_chat(client, url, model, max_tokens=max_tokens, content=PROMPT)

    async with httpx.AsyncClient(timeout=30) as probe:
        before = scrape((await probe.get(f"{url}/metrics")).text)
        watcher = asyncio.create_task(watch(probe))
        async with http_client(concurrency) as client:
            run = await run_closed_loop(one, concurrency, num_requests=len(models), client=client)
        stop = True
        await watcher
        after = scrape((await probe.get(f"{url}/metrics")).text)
    summary = summarize(run)
    wrong = [r for r in run.results if r.ok and r.served_by != expected[r.model]]
    hits = metric(after, "tuneloop_adapter_lookups_total", result="hit") - metric(
        before, "tuneloop_adapter_lookups_total", result="hit"
    )
    misses = metric(after, "tuneloop_adapter_lookups_total", result="miss") - metric(
        before, "tuneloop_adapter_lookups_total", result="miss"
    )
    cold = "tuneloop_adapter_cold_load_seconds"
    summary.update(
        distinct_models=len(set(models)),
        wrong_version=len(wrong),
        cold_loads=metric(after, "tuneloop_adapter_loads_total", kind="on_demand")
        - metric(before, "tuneloop_adapter_loads_total", kind="on_demand"),
        evictions=metric(after, "tuneloop_adapter_evictions_total", reason="lru")
        - metric(before, "tuneloop_adapter_evictions_total", reason="lru"),
        hit_rate=hits / (hits + misses) if hits + misses else None,
        cold_load_ms_p50=None if (p := histogram_quantile(before, after, cold, 0.5)) is None else p * 1000,
        cold_load_ms_p99=None if (p := histogram_quantile(before, after, cold, 0.99)) is None else p * 1000,
        cold_load_ms_mean=(
            1000
            * (metric(after, f"{cold}_sum") - metric(before, f"{cold}_sum"))
            / max(1.0, metric(after, f"{cold}_count") - metric(before, f"{cold}_count"))
        ),
        peak_resident=peak_resident,
    )
    return summary


async def measure(url: str, folders: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    admin = AdminClient(url)
    try:
        started = time.perf_counter()
        expected: dict[str, str] = {}
        names: list[str] = []
        for i, folder in enumerate(folders):
            version = await admin.register(folder, f"t{i:03d}")
            model = f"t{i:03d}@{version['version'][:12]}"
            names.append(model)
            expected[model] = f"t{i:03d}@{version['version'][:12]}"
        register_s = time.perf_counter() - started
    finally:
        await admin.aclose()
    log(f"registered {len(folders)} adapters in {register_s:.1f} s")
    concurrency = args.concurrency or (4 if args.quick else 8)
    requests = args.requests or (40 if args.quick else 200)
    max_tokens = args.max_tokens or (8 if args.quick else 32)
    # warm-up on the single adapter (first batches, allocator), then the two cells
    await run_cell(url, [names[0]] * concurrency, expected, concurrency, max_tokens)
    cells: dict[str, Any] = {}
    log("cell single")
    cells["single"] = await run_cell(url, [names[0]] * requests, expected, concurrency, max_tokens)
    log("cell zipf")
    order = [names[i] for i in zipf_sequence(len(names), requests, args.zipf_s, args.seed)]
    cells["zipf"] = await run_cell(url, order, expected, concurrency, max_tokens)
    return {
        "register_s": register_s,
        "concurrency": concurrency,
        "requests_per_cell": requests,
        "max_tokens": max_tokens,
        "cells": cells,
    }


def report(
    result: dict[str, Any], args: argparse.Namespace, env: dict[str, Any], load: Any
) -> tuple[dict[str, Any], str]:
    cells = result["cells"]
    single, zipf = cells["single"], cells["zipf"]
    throughput_ratio = ratio(zipf["tokens_per_s"], single["tokens_per_s"])
    payload = {
        "benchmark": NAME,
        "quick": args.quick,
        "adapters": args.adapters,
        "resident": args.resident,
        "max_loras": args.max_loras,
        "zipf_s": args.zipf_s,
        "environment": env,
        "machine_load_before": load,
        **result,
        "zipf_vs_single_tokens_per_s": throughput_ratio,
    }
    rows = [
        [
            label,
            c["requests"],
            c["ok"],
            c["failed"],
            c["wrong_version"],
            c["distinct_models"],
            c["tokens_per_s"],
            c["ttft_ms_p50"],
            c["ttft_ms_p99"],
            c["cold_loads"],
            c["evictions"],
            None if c["hit_rate"] is None else 100 * c["hit_rate"],
            c["cold_load_ms_p50"],
            c["cold_load_ms_p99"],
            c["peak_resident"],
        ]
        for label, c in cells.items()
    ]
    md = [
        f"# {NAME}{' (quick)' if args.quick else ''}",
        "",
        f"{args.adapters} adapter versions registered (no aliases), max_cpu_loras={args.resident}, "
        f"max_loras={args.max_loras}, one replica (vLLM on CPU); {result['concurrency']} streaming clients, "
        f"{result['requests_per_cell']} requests per cell, max_tokens={result['max_tokens']}, "
        f"Zipf s={args.zipf_s}. Commit {env.get('git_commit')}, {env.get('cpu_count')} CPUs.",
        "",
        md_table(
            [
                "cell",
                "requests",
                "ok",
                "failed",
                "wrong version",
                "distinct",
                "tokens/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "cold loads",
                "evictions",
                "hit rate %",
                "cold load p50 ms",
                "cold load p99 ms",
                "peak resident",
            ],
            rows,
        ),
        "",
        f"Zipf / single throughput: **{fmt(throughput_ratio, 2)}**; registering {args.adapters} adapters "
        f"took {fmt(result['register_s'])} s. Cold-load quantiles are estimated from the server's histogram "
        "(linear within a bucket); a cold load is fetching + hash check + the engine's load (on-demand loads "
        "skip the smoke generation by default). Machine load average (1/5/15 min) at the start: "
        f"{load.get('loadavg_1_5_15') if isinstance(load, dict) else load}; the cells ran back to back, so "
        "other work on the machine shifts their ratio.",
    ]
    return payload, "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = prepare_benchmark_model()
    env = environment()
    load = machine_load()
    with workdir("tuneloop-bench-many-") as wd:
        server, setup = tuneloop_server(model_path, wd, max_loras=args.max_loras)
        config = yaml.safe_load(setup.config_path.read_text())
        config["serving"]["engine"]["max_cpu_loras"] = args.resident
        setup.config_path.write_text(yaml.safe_dump(config))
        log(f"writing {args.adapters} adapters")
        folders = []
        for i in range(args.adapters):
            src = write_adapter(
                wd / "src" / f"t{i:03d}",
                base_model=model_path.name,
                r=8,
                alpha=16,
                target_modules=tuple(SMOLLM2_SHAPES),
                layers=30,
                module_shapes=SMOLLM2_SHAPES,
                seed=i,
                scale=0.05,
            )
            folders.append(Path(shutil.copytree(src, setup.incoming / f"t{i:03d}")))
        result = measure_on(server, lambda: measure(server.url, folders, args))
    payload, md = report(result, args, env, load)
    return publish_results(NAME, payload, md, quick=args.quick, override=args.name)


if __name__ == "__main__":
    sys.exit(main())
