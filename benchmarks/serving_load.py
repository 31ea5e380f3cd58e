"""Benchmark: load held by one and two model replicas on this CPU: requests/s and p99 latency at the knee.

Question (issue 7): how much load does `tuneloop serve` hold with one model replica, and with two, on this
machine? Reported per replica count: requests/s and p99 latency at the knee of a concurrency ladder, the
best requests/s overall, and the ratio two/one (the baseline is the one-replica run of the same invocation).

Service: `tuneloop serve` with the default model, started once with `num_replicas=1` and then — after the
first one has stopped, never both at once — with `num_replicas=2`; the same settings otherwise:
engine max_model_len 1024, KV cache 1 GiB per replica (`VLLM_CPU_KVCACHE_SPACE=1`: vLLM lets that variable
win over the engine's `kv_cache_gib`, so both are set to 1), max_loras 4, rank 16, `replica_num_cpus 0.5`,
Ray workers at normal priority. The second run waits until `/admin/replicas` lists both replicas.

Load: closed-loop clients (each sends its next request when its previous one ended), non-streaming chat
completions on the base model, temperature 0, fixed `max_tokens` (default 32), short prompts of mixed
length (client i's k-th request uses PROMPTS[(3 i + k) mod len]: deterministic, the same sequence for both
replica counts). A warm-up first, then the ladder: concurrency 1, 2, 4, 8, 16, 32 by default, each level
for `--level-s` seconds (default 20; no request starts after that, the running ones finish and count) and
at most `--max-requests` requests. Per level: requests/s (successful requests / wall time from the first
send to the last response), output tokens/s (from the server's `usage`), end-to-end latency p50/p99 of the
successful requests, errors (non-200, bad body, transport errors), and the CPU used by the service, by this
client, by each replica (the Serve replica actor with its vLLM engine-core and worker processes) and by
everything else on the machine.

The knee: the level with the highest requests/s among the *eligible* levels, ties to the lower
concurrency. A level is eligible when its error rate is at most `--max-error-rate` (default 0: no failed
request) and its p99 latency is at most the bound. The bound is `--p99-factor` (default 2) times the p99 at
the lowest concurrency of the one-replica run — one latency target shared by both replica counts, so the
ratio compares the load each holds at the same latency — or `--p99-bound-ms` when given. (The JSON also
has each run's knee against its own lowest-level p99.) No eligible level: no knee (reported as such).
A level of `--level-s` seconds holds few requests at low concurrency, so its p99 is close to its maximum.

CPU: this machine has few cores (2 where it was written). Two replicas are two vLLM engines on the same
machine; with the default `engine.cpu_partition: auto` each engine binds its threads to its own half of
the cores (`serving.engine.cpu_slots`; Ray's `num_cpus: 0.5` per replica is bookkeeping only). The ratio
says what a second replica adds *on this machine*, not what it would add with cores of its own.

Run: `python -m benchmarks.serving_load` (~10 minutes on 2 cores: two service starts, warm-ups and
6 levels x 20 s each); `--quick` for a smoke run (levels 1 and 4, 8 s each). Writes
benchmarks/results/serving_load.{json,md} (`--quick`: serving_load_quick.{json,md}).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.common import (
    ADMIN_TOKEN,
    RequestResult,
    ResourceMonitor,
    ServerProcess,
    chat_body,
    checked_warm_up,
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
    summarize,
    tally,
    tuneloop_server,
    workdir,
)

NAME = "serving_load"
FULL_LEVELS = (1, 2, 4, 8, 16, 32)
QUICK_LEVELS = (1, 4)
KV_CACHE_GIB = 1
MAX_MODEL_LEN = 1024
REPLICA_NUM_CPUS = 0.5
NOISY_OTHER_CORES = 0.3
"""A level during which other processes used more CPU cores than this is flagged as noisy."""

PROMPTS = (
    "Describe a lighthouse.",
    "Tell me about the ocean in a few sentences.",
    "Explain how a bicycle works, step by step, for a child who has never seen one.",
    "Write a short story about a cat who wants to fly.",
    "List some good habits for staying healthy and explain why each one matters.",
    "What is the difference between weather and climate? Explain with examples from everyday life, "
    "such as a rainy week in spring and the long-term temperature of a region.",
    "Describe your ideal weekend.",
    "A customer writes: my new desk lamp flickers when I turn it on, and sometimes it turns off by itself "
    "after a few minutes. I already tried another outlet. What should I check, and what could be wrong?",
)
"""Short prompts of mixed length (about 5 to 45 words) that make the default model talk past 32 tokens."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_load", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: levels 1 and 4, 8 s each")
    p.add_argument(
        "--levels",
        default=None,
        help="comma-separated concurrency levels (default 1,2,4,8,16,32; --quick: 1,4)",
    )
    p.add_argument("--level-s", type=float, default=None, help="seconds per level (default 20; --quick: 8)")
    p.add_argument(
        "--max-requests", type=int, default=2000, help="at most this many requests per level (default 2000)"
    )
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (default 32)")
    p.add_argument(
        "--replicas", default="1,2", help="replica counts to run, in order (default 1,2; 1 is the baseline)"
    )
    p.add_argument(
        "--p99-factor",
        type=float,
        default=2.0,
        help="knee bound: p99 <= this x the one-replica p99 at the lowest level (default 2)",
    )
    p.add_argument("--p99-bound-ms", type=float, default=None, help="knee bound in ms (overrides the factor)")
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        help="a level with a higher share of failed requests is not eligible as the knee (default 0)",
    )
    p.add_argument(
        "--warm-requests", type=int, default=None, help="warm-up requests (default 24; --quick: 8)"
    )
    p.add_argument(
        "--request-timeout-s", type=float, default=120.0, help="client timeout per request (default 120)"
    )
    p.add_argument(
        "--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick with --quick)"
    )
    args = p.parse_args(argv)
    levels = args.levels or ",".join(map(str, QUICK_LEVELS if args.quick else FULL_LEVELS))
    args.levels = sorted({int(x) for x in levels.split(",") if x.strip()})
    args.replicas = [int(x) for x in args.replicas.split(",") if x.strip()]
    if args.level_s is None:
        args.level_s = 8.0 if args.quick else 20.0
    if args.warm_requests is None:
        args.warm_requests = 8 if args.quick else 24
    if not args.levels or min(args.levels) < 1 or not args.replicas or min(args.replicas) < 1:
        p.error("levels and replica counts must be positive integers")
    return args


# --------------------------------------------------------------------------------------------- requests
def prompt_for(client_idx: int, seq: int) -> str:
    return PROMPTS[(3 * client_idx + seq) % len(PROMPTS)]


async def chat_once(
    client: httpx.AsyncClient, base_url: str, model: str, *, content: str, max_tokens: int
) -> RequestResult:
    """One non-streaming chat completion, timed end to end; `ok` with status 200 and a choice in the body.

    Never raises for HTTP or body failures: they are recorded in `error`.
    """
    res = RequestResult(model=model, started=time.perf_counter())
    try:
        resp = await client.post(
            f"{base_url}/v1/chat/completions", json=chat_body(model, content, max_tokens, stream=False)
        )
        res.record_headers(resp)
        if resp.status_code != 200:
            res.error = f"HTTP {resp.status_code}: {resp.text[:300]!r}"
            return res
        data = resp.json()
        choices = data.get("choices") or []
        if not choices:
            res.error = f"no choices in the response: {resp.text[:300]!r}"
            return res
        res.finish_reason = choices[0].get("finish_reason")
        res.completion_tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        res.ok = True
    except (httpx.HTTPError, ValueError, OSError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        res.finished = time.perf_counter()
    return res


async def wait_replicas(base_url: str, count: int, timeout_s: float = 900.0) -> list[str]:
    """Wait until `/admin/replicas` lists `count` live replicas (each reports in once its engine is up)."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                r = await client.get(f"{base_url}/admin/replicas")
                if r.status_code == 200:
                    seen = [str(x.get("replica_id")) for x in r.json().get("data", [])]
                    if len(seen) >= count:
                        return seen
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(1.0)
    raise RuntimeError(f"only {len(seen)} of {count} replicas reported in after {timeout_s:.0f} s: {seen}")


# ----------------------------------------------------------------------------------------- CPU per replica
def replica_cpu(server: ServerProcess) -> dict[int, float]:
    """CPU seconds used so far by each Serve replica of the service, keyed by the replica actor's pid: the
    actor plus its descendants (vLLM's `VLLM::EngineCore` and `VLLM::Worker`, where the model runs)."""
    out: dict[int, float] = {}
    for p in server.tree():
        try:
            if "ServeReplica" not in " ".join(p.cmdline()):
                continue
            procs = [p, *p.children(recursive=True)]
        except psutil.Error:
            continue
        total = 0.0
        for q in procs:
            try:
                t = q.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        out[p.pid] = total
    return out


# --------------------------------------------------------------------------------------------- load
async def run_level(
    server: ServerProcess,
    model: str,
    concurrency: int,
    args: argparse.Namespace,
    monitor: ResourceMonitor,
) -> dict[str, Any]:
    base_url = server.url

    async def one(client: httpx.AsyncClient, idx: int, seq: int) -> RequestResult:
        return await chat_once(
            client, base_url, model, content=prompt_for(idx, seq), max_tokens=args.max_tokens
        )

    replicas_before = replica_cpu(server)
    monitor.start_window()
    async with http_client(concurrency, timeout_s=args.request_timeout_s) as client:
        load = await run_closed_loop(
            one, concurrency, num_requests=args.max_requests, duration_s=args.level_s, client=client
        )
    res = monitor.end_window()
    replicas_after = replica_cpu(server)
    out = summarize(load, expected_tokens=args.max_tokens)
    for key in ("ttft_ms_p50", "ttft_ms_p99"):  # non-streaming: no first-token time
        out.pop(key, None)
    e2es = [r.e2e_s for r in load.results if r.ok]
    out["e2e_ms_max"] = max(e2es) * 1000.0 if e2es else None
    out["error_rate"] = out["failed"] / out["requests"] if out["requests"] else 1.0
    out["finish_reasons"] = tally(r.finish_reason or "?" for r in load.results if r.ok)
    out["resources"] = res.to_dict()
    out["replica_cores"] = [
        round((replicas_after[pid] - replicas_before.get(pid, 0.0)) / max(res.seconds, 1e-9), 3)
        for pid in sorted(replicas_after)
    ]
    log(
        f"  c={concurrency}: {out['requests_per_s']:.2f} req/s, {out['tokens_per_s']:.1f} tok/s, "
        f"p50 {fmt(out['e2e_ms_p50'], 0)} ms, p99 {fmt(out['e2e_ms_p99'], 0)} ms, "
        f"{out['ok']} ok / {out['failed']} failed, replicas {out['replica_cores']} cores, "
        f"other {res.other_cores:.2f} cores"
    )
    return out


async def measure(
    server: ServerProcess, model: str, replicas: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Wait for every replica, warm up, then run the ladder on a started service."""
    run: dict[str, Any] = {"replicas": replicas, "start_s": server.start_s}
    t0 = time.perf_counter()
    run["replica_ids"] = await wait_replicas(server.url, replicas)
    run["all_replicas_ready_s"] = (server.start_s or 0.0) + time.perf_counter() - t0
    with ResourceMonitor(server) as mon:

        async def warm(client: httpx.AsyncClient, idx: int, seq: int) -> RequestResult:
            return await chat_once(
                client, server.url, model, content=prompt_for(idx, seq), max_tokens=args.max_tokens
            )

        warm_c = min(4, max(args.levels))
        warm_run = await checked_warm_up(warm, warm_c, requests=args.warm_requests, where=server.url)
        run["warm_up"] = {
            "concurrency": warm_c,
            "requests": len(warm_run.results),
            "wall_s": round(warm_run.wall_s, 3),
        }
        log(f"{replicas} replica(s): warmed up ({len(warm_run.results)} requests in {warm_run.wall_s:.1f} s)")
        run["levels"] = {}
        for c in args.levels:
            run["levels"][str(c)] = await run_level(server, model, c, args, mon)
        run["memory"] = mon.summary()
    return run


def run_replicas(model_path: Path, model: str, replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    """Start the service with `replicas` replicas, measure, stop it; machine load before and after."""
    with workdir("tuneloop-load-") as wd:
        server, _ = tuneloop_server(
            model_path,
            wd,
            kv_cache_gib=KV_CACHE_GIB,
            max_model_len=MAX_MODEL_LEN,
            num_replicas=replicas,
            replica_num_cpus=REPLICA_NUM_CPUS,
            extra_env={"VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB)},
        )
        server.name = f"tuneloop-{replicas}r"
        load_before = machine_load()
        result = measure_on(server, lambda: measure(server, model, replicas, args), start_timeout_s=900.0)
        result["machine_load_before"] = load_before
        result["machine_load_after"] = machine_load()
        result["logs"] = str(server.kept_logs) if server.kept_logs else None
        return result


# --------------------------------------------------------------------------------------------- knee
def find_knee(
    levels: dict[str, dict[str, Any]], bound_ms: float | None, max_error_rate: float
) -> dict[str, Any]:
    """The eligible level with the highest requests/s (see the module doc); `concurrency` None if none."""
    eligible = []
    for row in levels.values():
        p99 = row["e2e_ms_p99"]
        if row["ok"] == 0 or p99 is None or row["error_rate"] > max_error_rate:
            continue
        if bound_ms is not None and p99 > bound_ms:
            continue
        eligible.append(row)
    if not eligible:
        return {"concurrency": None, "bound_ms": bound_ms}
    best = max(eligible, key=lambda r: (r["requests_per_s"], -r["concurrency"]))
    return {
        "concurrency": best["concurrency"],
        "requests_per_s": best["requests_per_s"],
        "tokens_per_s": best["tokens_per_s"],
        "e2e_ms_p99": best["e2e_ms_p99"],
        "e2e_ms_p50": best["e2e_ms_p50"],
        "bound_ms": bound_ms,
        "eligible_levels": [r["concurrency"] for r in eligible],
    }


def best_level(levels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    best = max(levels.values(), key=lambda r: (r["requests_per_s"], -r["concurrency"]))
    return {
        "concurrency": best["concurrency"],
        "requests_per_s": best["requests_per_s"],
        "tokens_per_s": best["tokens_per_s"],
        "e2e_ms_p99": best["e2e_ms_p99"],
        "failed": best["failed"],
    }


def lowest_p99(run: dict[str, Any]) -> float | None:
    levels = run["levels"]
    p99: float | None = levels[str(min(int(c) for c in levels))]["e2e_ms_p99"]
    return p99


def analyse(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    base = next((r for r in runs if r["replicas"] == 1), None)
    if args.p99_bound_ms is not None:
        bound: float | None = args.p99_bound_ms
        bound_rule = f"p99 <= {args.p99_bound_ms:g} ms (given)"
    else:
        ref = lowest_p99(base) if base is not None else None
        bound = None if ref is None else args.p99_factor * ref
        bound_rule = (
            f"p99 <= {args.p99_factor:g} x the one-replica p99 at c={min(args.levels)} "
            f"({fmt(ref, 0)} ms) = {fmt(bound, 0)} ms"
        )
    per: dict[str, Any] = {}
    for r in runs:
        own_ref = lowest_p99(r)
        per[str(r["replicas"])] = {
            "knee": find_knee(r["levels"], bound, args.max_error_rate),
            "knee_own_reference": find_knee(
                r["levels"], None if own_ref is None else args.p99_factor * own_ref, args.max_error_rate
            ),
            "best": best_level(r["levels"]),
            "failed_total": sum(lv["failed"] for lv in r["levels"].values()),
        }
    ratios: dict[str, Any] = {}
    one, two = per.get("1"), per.get("2")
    if one is not None and two is not None:
        ratios = {
            "knee_requests_per_s": ratio(
                two["knee"].get("requests_per_s"), one["knee"].get("requests_per_s")
            ),
            "knee_e2e_ms_p99": ratio(two["knee"].get("e2e_ms_p99"), one["knee"].get("e2e_ms_p99")),
            "best_requests_per_s": ratio(two["best"]["requests_per_s"], one["best"]["requests_per_s"]),
            "knee_own_reference_requests_per_s": ratio(
                two["knee_own_reference"].get("requests_per_s"),
                one["knee_own_reference"].get("requests_per_s"),
            ),
        }
    return {"bound_ms": bound, "bound_rule": bound_rule, "per_replicas": per, "ratio_two_over_one": ratios}


# --------------------------------------------------------------------------------------------- report
def short_cmd(cmd: str, width: int = 50) -> str:
    """A process's command line with paths cut to their last part, for the markdown."""
    return re.sub(r"\S*/(\S+)", r"\1", cmd).strip()[:width]


def build_report(
    runs: list[dict[str, Any]], args: argparse.Namespace, env: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    analysis = analyse(runs, args)
    per, ratios = analysis["per_replicas"], analysis["ratio_two_over_one"]
    cpus = env["cpu_count"]
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "settings": {
            "levels": args.levels,
            "level_s": args.level_s,
            "max_requests_per_level": args.max_requests,
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
            "stream": False,
            "warm_requests": args.warm_requests,
            "replica_counts": args.replicas,
            "p99_factor": args.p99_factor,
            "p99_bound_ms": args.p99_bound_ms,
            "max_error_rate": args.max_error_rate,
            "engine": {"max_model_len": MAX_MODEL_LEN, "kv_cache_gib": KV_CACHE_GIB, "max_loras": 4},
            "replica_num_cpus": REPLICA_NUM_CPUS,
            "service_env": {"VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB), "RAY_worker_niceness": "0"},
            "prompts": list(PROMPTS),
        },
        "environment": env,
        "knee_definition": (
            "highest requests/s among levels with error rate <= max_error_rate and p99 <= bound; "
            f"bound: {analysis['bound_rule']}"
        ),
        "analysis": analysis,
        "runs": runs,
    }
    title = "Load held: one vs two replicas" + (" (quick smoke run)" if args.quick else "")
    md = [
        f"# {title}",
        "",
        f"{env['date_utc']}, commit {env['git_commit']}, {cpus} CPUs, {env['memory_gib']} GiB, "
        f"vllm-cpu {env['packages'].get('vllm-cpu')}, ray {env['packages'].get('ray')}. "
        f"`tuneloop serve`, default model, engine max_model_len {MAX_MODEL_LEN}, KV cache {KV_CACHE_GIB} GiB "
        f"per replica, replica_num_cpus {REPLICA_NUM_CPUS}. Closed-loop clients, non-streaming chat "
        f"completions on the base model, temperature 0, max_tokens={args.max_tokens}, {len(PROMPTS)} short "
        f"prompts of mixed length; a warm-up of {args.warm_requests} requests, then each level for "
        f"{args.level_s:g} s (at most {args.max_requests} requests). Replica counts run one after the other.",
        "",
        f"**CPU:** this machine has {cpus} cores. The two replicas are two vLLM engines on these {cpus} "
        "cores, each bound to its own share of them (`engine.cpu_partition: auto`, the default; Ray's 0.5 "
        "CPU per replica is bookkeeping only): the ratio two/one is what a second replica adds on this "
        "machine, not what it would add with cores of its own.",
        "",
        f"**Knee:** the level with the highest requests/s whose error rate is <= {args.max_error_rate:g} and "
        f"whose {analysis['bound_rule']}; the same bound for both replica counts.",
        "",
        "## Summary",
        "",
    ]
    rows = []
    for r in runs:
        a = per[str(r["replicas"])]
        k, b = a["knee"], a["best"]
        rows.append(
            [
                r["replicas"],
                k.get("concurrency") or "none",
                k.get("requests_per_s"),
                k.get("e2e_ms_p99"),
                k.get("tokens_per_s"),
                f"{fmt(b['requests_per_s'], 2)} (c={b['concurrency']})",
                b["e2e_ms_p99"],
                a["failed_total"],
            ]
        )
    md.append(
        md_table(
            [
                "replicas",
                "knee c",
                "knee req/s",
                "knee p99 ms",
                "knee tok/s",
                "best req/s",
                "p99 at best ms",
                "failed (all levels)",
            ],
            rows,
            digits=2,
        )
    )
    if ratios:
        md += [
            "",
            f"Ratio two/one: knee requests/s **{fmt(ratios['knee_requests_per_s'], 2)}**, knee p99 "
            f"{fmt(ratios['knee_e2e_ms_p99'], 2)}, best requests/s {fmt(ratios['best_requests_per_s'], 2)} "
            f"(knee against each run's own c={min(args.levels)} p99: "
            f"{fmt(ratios['knee_own_reference_requests_per_s'], 2)}).",
        ]
    noisy = [
        f"{r['replicas']} replica(s) c={lv['concurrency']} ({lv['resources']['other_cores']:.2f})"
        for r in runs
        for lv in r["levels"].values()
        if lv["resources"]["other_cores"] > NOISY_OTHER_CORES
    ]
    payload["noisy_levels"] = noisy
    if noisy:
        md += [
            "",
            f"**Noisy:** other processes used more than {NOISY_OTHER_CORES} CPU cores during "
            f"{', '.join(noisy)}; those numbers are not from a quiet machine.",
        ]
    for r in runs:
        md += [
            "",
            f"## {r['replicas']} replica(s)",
            "",
            f"Start {fmt(r['start_s'])} s (all replicas reporting in at {fmt(r['all_replicas_ready_s'])} s); "
            f"peak RSS of the service {fmt(r['memory']['peak_rss_gib'], 2)} GiB.",
            "",
        ]
        level_rows = []
        for lv in r["levels"].values():
            res = lv["resources"]
            within = analysis["bound_ms"] is None or (
                lv["e2e_ms_p99"] is not None and lv["e2e_ms_p99"] <= analysis["bound_ms"]
            )
            level_rows.append(
                [
                    lv["concurrency"],
                    lv["requests"],
                    lv["failed"],
                    lv["requests_per_s"],
                    lv["tokens_per_s"],
                    lv["e2e_ms_p50"],
                    lv["e2e_ms_p99"],
                    within,
                    lv["tokens_per_request_mean"],
                    res["server_cores"],
                    " + ".join(f"{c:.2f}" for c in lv["replica_cores"]) or "–",
                    res["client_cores"],
                    res["other_cores"],
                ]
            )
        md.append(
            md_table(
                [
                    "c",
                    "requests",
                    "failed",
                    "req/s",
                    "tok/s",
                    "p50 ms",
                    "p99 ms",
                    "p99 in bound",
                    "tokens/req",
                    "service cores",
                    "replica cores",
                    "client cores",
                    "other cores",
                ],
                level_rows,
                digits=2,
            )
        )
        errors = sorted({e for lv in r["levels"].values() for e in lv["errors_sample"]})
        if errors:
            md += ["", "Errors (sample):", "", *(f"- `{e[:200]}`" for e in errors[:5])]
    md += [
        "",
        "`replica cores`: CPU seconds per second of each replica (its Serve actor and vLLM processes); "
        "`other cores`: everything on the machine except the service and this client (0 = quiet).",
        "",
        "## Machine load",
        "",
    ]
    md.append(
        md_table(
            ["replicas", "load avg before (1/5/15 m)", "load avg after", "busy processes before"],
            [
                [
                    r["replicas"],
                    r["machine_load_before"]["loadavg_1_5_15"],
                    r["machine_load_after"]["loadavg_1_5_15"],
                    "; ".join(
                        f"{short_cmd(p['cmd'])} {p['cpu_percent']:.0f}%"
                        for p in r["machine_load_before"]["busy_processes"][:3]
                    )
                    or "none",
                ]
                for r in runs
            ],
        )
    )
    md += [
        "",
        "Run: `python -m benchmarks.serving_load` (`--quick` for a smoke run; `--levels`, `--level-s`, "
        "`--p99-factor`, `--p99-bound-ms` to change the ladder and the knee bound).",
    ]
    return payload, "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = prepare_benchmark_model()
    model = model_path.name
    env = environment()
    runs = [run_replicas(model_path, model, n, args) for n in args.replicas]
    payload, md = build_report(runs, args, env)
    return publish_results(NAME, payload, md, quick=args.quick, override=args.name)


if __name__ == "__main__":
    sys.exit(main())
