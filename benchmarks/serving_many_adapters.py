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

With `--replicas N` (N model replicas, each its own vLLM engine and `max_cpu_loras`) the `zipf` cell runs
twice, with Ray Serve's routing header `serve_multiplexed_model_id: name@<12 hex>` on every request (as
tuneloop's eval client sends it; the proxy prefers a replica that holds the version) and without it (the
proxy spreads requests regardless of adapters), in that order, each from a fresh set of 100 versions so
neither finds the other's residency. Metrics are read from every replica (the proxy answers each scrape
from one replica; the benchmark scrapes until it has seen them all) and summed; `resident at end` counts
the distinct versions the replicas hold together (`tuneloop_adapter_loaded`).

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
    p.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    p.add_argument(
        "--max-ongoing-requests",
        type=int,
        default=None,
        help="serving.max_ongoing_requests per replica (default: tuneloop's); Ray Serve sends a request "
        "with the routing header to a replica without the version only when those with it are this busy",
    )
    p.add_argument("--name", default=None, help="results file name (default serving_many_adapters[_quick])")
    return p.parse_args(argv)


def zipf_sequence(n_models: int, n_requests: int, s: float, seed: int) -> list[int]:
    weights = [1.0 / (i + 1) ** s for i in range(n_models)]
    return random.Random(seed).choices(range(n_models), weights=weights, k=n_requests)


Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Prometheus samples by series name: (labels, value) per sample."""

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(text: str) -> Samples:
    out: Samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        out.setdefault(m.group("name"), []).append((labels, float(m.group("value"))))
    return out


async def scrape_replicas(client: httpx.AsyncClient, url: str, replicas: int) -> Samples:
    """Every replica's `/metrics`, merged (each series carries its `replica` label). The proxy answers
    each scrape from one replica, so this scrapes until it has seen `replicas` different ones."""
    seen: dict[str, Samples] = {}
    for _ in range(50 * replicas):
        samples = scrape((await client.get(f"{url}/metrics")).text)
        labels = next((lab for lab, _ in samples.get("tuneloop_loaded_adapters", ())), {})
        seen[labels.get("replica", "?")] = samples
        if len(seen) >= replicas:
            break
    if len(seen) < replicas:
        raise RuntimeError(f"saw the metrics of {len(seen)} of {replicas} replicas: {sorted(seen)}")
    merged: Samples = {}
    for samples in seen.values():
        for name, rows in samples.items():
            merged.setdefault(name, []).extend(rows)
    return merged


def metric(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, ()) if all(lab.get(k) == x for k, x in labels.items()))


def histogram_quantile(
    before: Samples,
    after: Samples,
    name: str,
    q: float,
) -> float | None:
    """The q-quantile (0..1) of a histogram's observations between two scrapes (linear in a bucket)."""

    def buckets(s: Samples) -> dict[float, float]:
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
    url: str,
    models: list[str],
    expected: dict[str, str],
    concurrency: int,
    max_tokens: int,
    *,
    replicas: int = 1,
    route: bool = True,
) -> dict[str, Any]:
    """One closed-loop cell over `models` in order; `route`: send the routing header (versions only)."""
    order = list(models)
    peak_resident: dict[str, int] = {}
    stop = False

    async def watch(client: httpx.AsyncClient) -> None:
        while not stop:
            for lab, value in scrape((await client.get(f"{url}/metrics")).text).get(
                "tuneloop_loaded_adapters", ()
            ):
                replica = lab.get("replica", "?")
                peak_resident[replica] = max(peak_resident.get(replica, 0), int(value))
            await asyncio.sleep(0.25)

    async def one(client: httpx.AsyncClient, idx: int, seq: int) -> Any:
        model = order.pop(0)
        return await stream_chat(client, url, model, max_tokens=max_tokens, content=PROMPT, route=route)

    async with httpx.AsyncClient(timeout=30) as probe:
        before = await scrape_replicas(probe, url, replicas)
        watcher = asyncio.create_task(watch(probe))
        async with http_client(concurrency) as client:
            run = await run_closed_loop(one, concurrency, num_requests=len(models), client=client)
        stop = True
        await watcher
        after = await scrape_replicas(probe, url, replicas)
    summary = summarize(run)
    wrong = [r for r in run.results if r.ok and r.served_by != expected[r.model]]
    hits = metric(after, "tuneloop_adapter_lookups_total", result="hit") - metric(
        before, "tuneloop_adapter_lookups_total", result="hit"
    )
    misses = metric(after, "tuneloop_adapter_lookups_total", result="miss") - metric(
        before, "tuneloop_adapter_lookups_total", result="miss"
    )
    cold = "tuneloop_adapter_cold_load_seconds"
    resident = [lab["adapter"] for lab, v in after.get("tuneloop_adapter_loaded", ()) if v > 0]
    summary.update(
        distinct_models=len(set(models)),
        routing_header=route,
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
        peak_resident=max(peak_resident.values(), default=0),
        resident_at_end=len(set(resident)),
        resident_copies_at_end=len(resident),
    )
    return summary


def write_adapters(src: Path, model_name: str, incoming: Path, names: list[str]) -> list[Path]:
    """One r=8 q/v adapter of the default base per name (seed = its index), written under `src` and
    copied into the server's import folder `incoming`; the copies' folders."""
    folders = []
    for i, name in enumerate(names):
        written = write_adapter(
            src / name,
            base_model=model_name,
            r=8,
            alpha=16,
            target_modules=tuple(SMOLLM2_SHAPES),
            layers=30,
            module_shapes=SMOLLM2_SHAPES,
            seed=i,
            scale=0.05,
        )
        folders.append(Path(shutil.copytree(written, incoming / name)))
    return folders


async def register_all(url: str, folders: list[Path]) -> list[str]:
    """Register each folder as a version of its own name (no alias: none is pinned); `name@<12 hex>`."""
    admin = AdminClient(url)
    try:
        return [
            f"{folder.name}@{(await admin.register(folder, folder.name))['version'][:12]}"
            for folder in folders
        ]
    finally:
        await admin.aclose()


async def measure(url: str, folders: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    names = await register_all(url, folders[: args.adapters])
    register_s = time.perf_counter() - started
    # with several replicas the cell without the routing header gets versions of its own (same Zipf
    # order), so it starts as cold as the cell with the header did
    plain = await register_all(url, folders[args.adapters :]) if args.replicas > 1 else []
    expected = {name: name for name in names + plain}
    log(f"registered {len(folders)} adapters in {time.perf_counter() - started:.1f} s")
    concurrency = args.concurrency or (4 if args.quick else 8)
    requests = args.requests or (40 if args.quick else 200)
    max_tokens = args.max_tokens or (8 if args.quick else 32)
    n = args.replicas

    async def cell(order: list[str], *, route: bool = True) -> dict[str, Any]:
        return await run_cell(url, order, expected, concurrency, max_tokens, replicas=n, route=route)

    # warm-up on the single adapter (first batches, allocator), then the cells
    await cell([names[0]] * concurrency * n, route=False)
    cells: dict[str, Any] = {}
    log("cell single")
    cells["single"] = await cell([names[0]] * requests, route=n == 1)
    ranks = zipf_sequence(len(names), requests, args.zipf_s, args.seed)
    log("cell zipf")
    cells["zipf"] = await cell([names[i] for i in ranks])
    if plain:
        log("cell zipf without the routing header")
        cells["zipf_no_header"] = await cell([plain[i] for i in ranks], route=False)
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
        "replicas": args.replicas,
        "max_ongoing_requests": args.max_ongoing_requests,
        "environment": env,
        "machine_load_before": load,
        **result,
        "zipf_vs_single_tokens_per_s": throughput_ratio,
    }
    plain = cells.get("zipf_no_header")
    if plain is not None:
        payload["zipf_header_vs_no_header_tokens_per_s"] = ratio(zipf["tokens_per_s"], plain["tokens_per_s"])
    rows = [
        [
            label,
            "yes" if c["routing_header"] else "no",
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
            c["resident_at_end"],
        ]
        for label, c in cells.items()
    ]
    replicas = "one replica" if args.replicas == 1 else f"{args.replicas} replicas, each its own engine"
    if args.max_ongoing_requests is not None:
        replicas += f", max_ongoing_requests={args.max_ongoing_requests}"
    header_note = (
        []
        if plain is None
        else [
            "",
            "With the routing header / without it (same Zipf order over a fresh set of versions each): "
            f"throughput {fmt(payload['zipf_header_vs_no_header_tokens_per_s'], 2)}x, hit rate "
            f"{fmt_pct(zipf['hit_rate'])} vs {fmt_pct(plain['hit_rate'])}, cold loads "
            f"{fmt(zipf['cold_loads'], 0)} vs {fmt(plain['cold_loads'], 0)}, distinct versions resident "
            f"at the end {zipf['resident_at_end']} vs {plain['resident_at_end']} "
            f"({args.replicas} x {args.resident} slots). "
            "The `single` reference runs without the header (with it, one replica would take all of it).",
        ]
    )
    md = [
        f"# {NAME}{' (quick)' if args.quick else ''}",
        "",
        f"{args.adapters} adapter versions registered (no aliases), max_cpu_loras={args.resident}, "
        f"max_loras={args.max_loras}, {replicas} (vLLM on CPU); {result['concurrency']} streaming clients, "
        f"{result['requests_per_cell']} requests per cell, max_tokens={result['max_tokens']}, "
        f"Zipf s={args.zipf_s}. Commit {env.get('git_commit')}, {env.get('cpu_count')} CPUs.",
        "",
        md_table(
            [
                "cell",
                "routing header",
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
                "peak resident (one replica)",
                "distinct resident at end (all replicas)",
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
        *header_note,
    ]
    return payload, "\n".join(md)


def fmt_pct(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.0f} %"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = prepare_benchmark_model()
    env = environment()
    load = machine_load()
    with workdir("tuneloop-bench-many-") as wd:
        server, setup = tuneloop_server(
            model_path,
            wd,
            max_loras=args.max_loras,
            num_replicas=args.replicas,
            engine={"max_cpu_loras": args.resident},
            serving=(
                {"max_ongoing_requests": args.max_ongoing_requests}
                if args.max_ongoing_requests is not None
                else None
            ),
        )
        names = [f"t{i:03d}" for i in range(args.adapters)]
        if args.replicas > 1:
            names += [f"u{i:03d}" for i in range(args.adapters)]  # the cell without the routing header
        log(f"writing {len(names)} adapters")
        folders = write_adapters(wd / "src", model_path.name, setup.incoming, names)
        result = measure_on(server, lambda: measure(server.url, folders, args))
    payload, md = report(result, args, env, load)
    return publish_results(NAME, payload, md, quick=args.quick, override=args.name)


if __name__ == "__main__":
    sys.exit(main())
