"""Benchmark: hot-swapping an adapter alias under load — failed requests and time to the new version.

Question: when `name@champion` is moved to another version (and rolled back) while clients stream
requests at it, does any request fail, and how soon is the new version serving? Goals: 0 failed requests
(issue 3); <= 2 s at the 99th percentile from the swap call to the first response served by the new version
under 32 streaming clients (issue 16; with 11 moves per service, the max).

Setup: `tuneloop serve` with the default model; two versions of adapter `sw` (real peft LoRA adapters,
r=16 on q/k/v/o) registered through the admin API, v1 behind alias `champion`.

Load: 32 closed-loop clients stream chat completions to model `sw` (temperature 0, max_tokens=64) for
60 s. Meanwhile the alias is moved 10 times (`PUT /admin/adapters/sw/aliases/champion`, alternating
v2, v1, ...) at fixed intervals and finally rolled back (`POST /admin/adapters/sw/rollback`). A header
probe sends a streamed request to `sw` every 0.1 s and reads only its response headers (tuneloop routes
before it streams, so the `x-tuneloop-served-by` header is the routing decision), then disconnects; so a
version change shows up within ~0.1 s instead of waiting for a 64-token load request to start and end.
A poller reads `GET /v1/models` every 25 ms (the replica's routing snapshot). Probe requests count as
traffic (a non-200 is a failure).

Measured:
* failed requests: any non-200, an error event in the stream, or a stream without `data: [DONE]`;
* per change: the admin call's own duration (and the server's `staged_s`: until every replica had the
  target loaded and smoke-tested), and the time from the call's start to the first response (load or
  probe) whose `x-tuneloop-served-by` header names the new version; stale responses (a request started
  after the call returned but served by the old version);
* throughput during the swaps relative to a steady period without swaps measured just before (same run);
* peak RSS of the service's whole process tree during the load.

Last, during the same load, a third version is registered and the alias moved to it in one call
(`POST /admin/adapters` with `alias`): a version no replica has seen, so the call loads and smoke-tests it
under the load (the cold case).

Baselines in the same run, three services one after the other: vLLM's first-come-first-served scheduler
(`engine.scheduling_policy: fcfs`, issue 16 item 5), tuneloop's default `priority` (staging's smoke
generation overtakes queued client requests) with `serving.preload_new_versions: false` (v2 loads when the
first swap stages it), and the defaults (priority, and v2, registered while the service runs, is loaded and
smoke-tested into a free slot right away, so the first swap finds it resident).

Run: `python -m benchmarks.serving_hotswap` (~12 minutes on 2 cores; `--quick` for a smoke run;
`--cells priority` for one service only).
Writes benchmarks/results/serving_hotswap.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    AdminClient,
    RequestResult,
    ResourceMonitor,
    ServerProcess,
    add_priority_args,
    add_quiet_args,
    chat_body,
    environment,
    fmt,
    goals_table,
    http_client,
    log,
    machine_load,
    md_table,
    measure_on,
    median,
    ms,
    percentile,
    prepare_benchmark_model,
    publish_results,
    quiet_policy,
    ratio,
    run_closed_loop,
    stream_chat,
    summarize,
    tally,
    tuneloop_server,
    wait_quiet,
    wait_served_by,
    warm_up,
    workdir,
)
from serving.engine.devices import DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS
from serving.testing import make_peft_adapter

NAME = "serving_hotswap"
STEP_BUDGET_DEFAULT = f"tuneloop's default ({DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS} on CPU, vLLM's on CUDA)"
ADAPTER = "sw"
ALIAS = "champion"
GOAL_SWITCH_S = 2.0
CELLS: dict[str, tuple[str, bool]] = {  # name -> (engine.scheduling_policy, serving.preload_new_versions)
    "fcfs": ("fcfs", True),
    "priority-no-preload": ("priority", False),
    "priority": ("priority", True),
}


@dataclass(slots=True)
class Change:
    """One alias change made during the load, as the client saw it."""

    kind: str  # "swap" | "rollback" | "register" (a new version, alias moved in the same call)
    target_short: str  # name@version12 the alias should serve afterwards
    from_short: str
    call_start: float
    call_end: float = 0.0
    status: str = "ok"
    server: dict[str, Any] | None = None

    @property
    def call_s(self) -> float:
        return self.call_end - self.call_start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 4 clients, 20 s, 3 swaps + rollback")
    p.add_argument("--concurrency", type=int, default=None, help="load clients (default 32)")
    p.add_argument("--duration", type=float, default=None, help="seconds of load during swaps (default 60)")
    p.add_argument("--swaps", type=int, default=None, help="alias moves before the rollback (default 10)")
    p.add_argument("--steady", type=float, default=None, help="seconds of steady load first (default 30)")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens per load request (default 64)")
    p.add_argument(
        "--cells",
        default=",".join(CELLS),
        help="services to measure, in order (comma-separated; default all): fcfs (vLLM's scheduler), "
        "priority-no-preload (versions load when a swap stages them), priority (tuneloop's defaults)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="the service's serving.engine.max_num_batched_tokens (default: tuneloop's)",
    )
    add_quiet_args(p)
    add_priority_args(p)
    p.add_argument(
        "--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick with --quick)"
    )
    p.add_argument(
        "--rerender",
        type=Path,
        default=None,
        help="write the report again from a results JSON of this benchmark (no measurement)",
    )
    return p.parse_args(argv)


def short(version: str) -> str:
    return f"{ADAPTER}@{version[:12]}"


async def header_probe(client: httpx.AsyncClient, url: str) -> RequestResult:
    """A streamed request read only up to its response headers (which name the version serving it)."""
    r = RequestResult(model=ADAPTER, started=time.perf_counter())
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=chat_body(ADAPTER, "Hi", 1)
        ) as resp:
            r.record_headers(resp)
            r.ok = resp.status_code == 200 and r.served_by is not None
            if not r.ok:
                r.error = f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}"
    except httpx.HTTPError as exc:
        r.error = f"{type(exc).__name__}: {exc}"
    r.finished = time.perf_counter()
    return r


async def probe_loop(url: str, stop: asyncio.Event, out: list[RequestResult], interval_s: float) -> None:
    """Header probes one after the other, `interval_s` apart, until `stop` (closing a stream early is
    a client disconnect to the server: its engine request, if any, is aborted)."""
    async with http_client(1) as client:
        while not stop.is_set():
            out.append(await header_probe(client, url))
            await asyncio.sleep(interval_s)


async def routing_loop(
    url: str, stop: asyncio.Event, out: list[tuple[float, str | None]], latencies: list[float]
) -> None:
    """Poll `GET /v1/models` (the replica's routing snapshot, no engine work): (time, champion version);
    the poll latencies show whether the replica's HTTP path stays responsive under load."""
    async with httpx.AsyncClient(timeout=60) as client:
        while not stop.is_set():
            version = None
            sent = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                cards = (await client.get(f"{url}/v1/models")).json()["data"]
                version = next((c.get("version") for c in cards if c["id"] == ADAPTER), None)
            now = time.perf_counter()
            latencies.append(now - sent)
            out.append((now, short(version) if version else None))
            await asyncio.sleep(0.025)


async def admin_read_loop(admin: AdminClient, stop: asyncio.Event, latencies: list[float]) -> None:
    """`GET /admin/adapters` every 0.5 s: an admin read that runs in a worker thread on the replica
    (`asyncio.to_thread`), unlike `GET /v1/models`; comparing the two locates delays in the admin path."""
    while not stop.is_set():
        sent = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            await admin.client.get("/admin/adapters")
        latencies.append(time.perf_counter() - sent)
        await asyncio.sleep(0.5)


async def change_loop(
    admin: AdminClient,
    versions: list[str],
    swaps: int,
    start_at: float,
    interval_s: float,
    changes: list[Change],
    new_folder: Path,
) -> None:
    """Move the alias `swaps` times (alternating versions), roll it back, then register `new_folder` with
    the alias moved to it in the same call; one change every `interval_s`."""
    current = versions[0]
    for k in range(swaps + 1):
        await asyncio.sleep(max(0.0, start_at + k * interval_s - time.perf_counter()))
        if k < swaps:
            target = versions[(k + 1) % 2]
            change = Change("swap", short(target), short(current), time.perf_counter())
            try:
                change.server = await admin.move_alias(ADAPTER, ALIAS, target)
            except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
                change.status = f"failed: {exc}"
        else:
            target = versions[(k - 1) % 2]  # the version before the last swap
            change = Change("rollback", short(target), short(current), time.perf_counter())
            try:
                change.server = await admin.rollback(ADAPTER, ALIAS)
                target = str(change.server.get("to_version", target))
                change.target_short = short(target)
            except Exception as exc:  # noqa: BLE001
                change.status = f"failed: {exc}"
        change.call_end = time.perf_counter()
        changes.append(change)
        log(f"  {change.kind} -> {change.target_short}: call {change.call_s * 1000:.0f} ms ({change.status})")
        if change.status == "ok":
            current = target
    await asyncio.sleep(max(0.0, start_at + (swaps + 1) * interval_s - time.perf_counter()))
    change = Change("register", "?", short(current), time.perf_counter())
    try:
        answer = await admin.register_and_move(new_folder, ADAPTER, ALIAS)
        change.server, change.target_short = answer["swap"], short(answer["adapter"]["version"])
    except Exception as exc:  # noqa: BLE001
        change.status = f"failed: {exc}"
    change.call_end = time.perf_counter()
    changes.append(change)
    log(f"  register -> {change.target_short}: call {change.call_s * 1000:.0f} ms ({change.status})")


def analyse(
    changes: list[Change],
    traffic: list[RequestResult],
    routing: list[tuple[float, str | None]],
    load: list[RequestResult],
) -> list[dict[str, Any]]:
    """Per change: time to the first response served by the target, and stale responses after the call."""
    rows = []
    heads = sorted(
        (r for r in traffic if r.headers_at is not None and r.served_by), key=lambda r: r.headers_at or 0
    )
    for i, ch in enumerate(changes):
        next_start = changes[i + 1].call_start if i + 1 < len(changes) else float("inf")
        first = next(
            (r for r in heads if (r.headers_at or 0) >= ch.call_start and r.served_by == ch.target_short),
            None,
        )
        stale = [r for r in traffic if ch.call_end < r.started < next_start and r.served_by == ch.from_short]
        to_first = None if first is None or first.headers_at is None else first.headers_at - ch.call_start
        switch = next((t for t, v in routing if t >= ch.call_start and v == ch.target_short), None)
        completed = [
            r.finished for r in load if r.ok and r.started >= ch.call_start and r.served_by == ch.target_short
        ]
        rows.append(
            {
                "kind": ch.kind,
                "from": ch.from_short,
                "to": ch.target_short,
                "status": ch.status,
                "call_ms": ch.call_s * 1000,
                "server_staged_ms": ms((ch.server or {}).get("staged_s")),
                "server_total_ms": ms((ch.server or {}).get("total_s")),
                "to_first_new_response_ms": ms(to_first),
                "to_routing_switch_ms": None if switch is None else (switch - ch.call_start) * 1000,
                "first_new_after_call_returned_ms": None
                if first is None or first.headers_at is None
                else (first.headers_at - ch.call_end) * 1000,
                "stale_responses_after_call": len(stale),
                "to_first_new_completed_load_response_ms": (min(completed) - ch.call_start) * 1000
                if completed
                else None,
            }
        )
    return rows


async def measure(
    server: ServerProcess, folders: dict[str, Path], args: argparse.Namespace, cfg: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {"start_s": server.start_s}
    conc, max_tokens = cfg["concurrency"], cfg["max_tokens"]
    with ResourceMonitor(server) as mon:
        out["idle_rss_gib"] = mon.peak_rss_bytes / 2**30
        admin = AdminClient(server.url)
        try:
            v1 = (await admin.register(folders["v1"], ADAPTER, alias=ALIAS))["version"]
            v2 = (await admin.register(folders["v2"], ADAPTER))["version"]
            await wait_served_by(server.url, ADAPTER, short(v1))
            log(f"registered {short(v1)} (champion) and {short(v2)}")
            await warm_up(
                server.url, [ADAPTER], concurrency=conc, requests=max(conc, 8), max_tokens=min(8, max_tokens)
            )

            async def one(client: httpx.AsyncClient, idx: int, seq: int) -> RequestResult:
                return await stream_chat(client, server.url, ADAPTER, max_tokens=max_tokens)

            quiet = quiet_policy(args)
            if quiet is not None:
                out["other_cores_before_steady"] = await wait_quiet(mon, quiet)
            log(f"steady load: {conc} clients for {cfg['steady_s']:.0f} s")
            mon.start_window()
            steady = await run_closed_loop(one, conc, duration_s=cfg["steady_s"])
            steady_sum = summarize(steady, expected_tokens=max_tokens)
            steady_sum["resources"] = mon.end_window().to_dict()

            if quiet is not None:
                out["other_cores_before_swaps"] = await wait_quiet(mon, quiet)
            log(f"swap load: {conc} clients for {cfg['duration_s']:.0f} s, {cfg['swaps']} swaps + rollback")
            changes: list[Change] = []
            probes: list[RequestResult] = []
            routing: list[tuple[float, str | None]] = []
            poll_latency: list[float] = []
            admin_latency: list[float] = []
            stop_probe = asyncio.Event()
            mon.start_window()
            t0 = time.perf_counter()
            interval = (cfg["duration_s"] - cfg["lead_s"]) / (cfg["swaps"] + 2)
            probe = asyncio.create_task(probe_loop(server.url, stop_probe, probes, 0.1))
            poller = asyncio.create_task(routing_loop(server.url, stop_probe, routing, poll_latency))
            reader_admin = AdminClient(server.url)
            admin_reader = asyncio.create_task(admin_read_loop(reader_admin, stop_probe, admin_latency))
            changer = asyncio.create_task(
                change_loop(
                    admin, [v1, v2], cfg["swaps"], t0 + cfg["lead_s"], interval, changes, folders["v3"]
                )
            )
            pss = asyncio.create_task(asyncio.sleep(cfg["duration_s"] / 2))
            load = await run_closed_loop(one, conc, duration_s=cfg["duration_s"])
            await changer  # a slow change may outlast the load; its traffic is the probe's
            await pss
            await asyncio.to_thread(mon.snapshot_pss)
            await asyncio.sleep(1.0)
            stop_probe.set()
            await probe
            await poller
            await admin_reader
            await reader_admin.aclose()
            swap_sum = summarize(load, expected_tokens=max_tokens)
            swap_sum["resources"] = mon.end_window().to_dict()
        finally:
            await admin.aclose()
        out["memory"] = mon.summary()
    traffic = load.results + probes
    per_change = analyse(changes, traffic, routing, load.results)
    probe_heads = [r.headers_at - r.started for r in probes if r.ok and r.headers_at is not None]
    failed = [r for r in traffic if not r.ok]
    out.update(
        {
            "versions": {"v1": short(v1), "v2": short(v2)},
            "steady": steady_sum,
            "during_swaps": swap_sum,
            "throughput_ratio_during_swaps": ratio(swap_sum["tokens_per_s"], steady_sum["tokens_per_s"]),
            "probe_requests": len(probes),
            "probe_failed": sum(1 for r in probes if not r.ok),
            "probe_headers_ms_p50": ms(median(probe_heads)),
            "probe_headers_ms_p99": ms(percentile(probe_heads, 99)),
            "routing_polls": len(routing),
            "routing_poll_ms_p50": ms(median(poll_latency)),
            "routing_poll_ms_p99": ms(percentile(poll_latency, 99)),
            "routing_poll_ms_max": ms(max(poll_latency, default=None)),
            "probe_headers_ms_max": ms(max(probe_heads, default=None)),
            "admin_read_ms_p50": ms(median(admin_latency)),
            "admin_read_ms_p99": ms(percentile(admin_latency, 99)),
            "admin_read_ms_max": ms(max(admin_latency, default=None)),
            "load_requests": len(load.results),
            "load_failed": sum(1 for r in load.results if not r.ok),
            "failed_total": len(failed),
            "failed_errors_sample": sorted({r.error or "?" for r in failed})[:10],
            "served_by_counts": tally(r.served_by or "?" for r in traffic),
            "changes": per_change,
        }
    )
    return out


def report(
    result: dict[str, Any], cfg: dict[str, Any], env: dict[str, Any], load: dict[str, Any], quick: bool
) -> tuple[dict[str, Any], str]:
    changes = result["changes"]
    cold = next((c for c in changes if c["kind"] == "register"), None)
    ok_changes = [c for c in changes if c["status"] == "ok" and c["kind"] != "register"]  # the moves
    to_first = [
        c["to_first_new_response_ms"] for c in ok_changes if c["to_first_new_response_ms"] is not None
    ]
    calls = [c["call_ms"] for c in ok_changes]
    switches = [c["to_routing_switch_ms"] for c in ok_changes if c["to_routing_switch_ms"] is not None]
    after = [
        c["first_new_after_call_returned_ms"]
        for c in ok_changes
        if c["first_new_after_call_returned_ms"] is not None
    ]
    missing = sum(1 for c in ok_changes if c["to_first_new_response_ms"] is None)
    summary = {
        "changes": len(changes),
        "changes_failed": sum(1 for c in changes if c["status"] != "ok"),
        "register_and_move_to_new_ms": cold["to_first_new_response_ms"] if cold else None,
        "to_first_new_ms_median": median(to_first),
        "to_first_new_ms_max": max(to_first, default=None),
        "changes_without_new_response": missing,
        "to_routing_switch_ms_median": median(switches),
        "to_routing_switch_ms_max": max(switches, default=None),
        "first_new_after_call_returned_ms_median": median(after),
        "to_first_new_completed_ms_median": median(
            [
                c["to_first_new_completed_load_response_ms"]
                for c in ok_changes
                if c["to_first_new_completed_load_response_ms"] is not None
            ]
        ),
        "call_ms_median": median(calls),
        "call_ms_max": max(calls, default=None),
        "stale_responses": sum(c["stale_responses_after_call"] for c in changes),
        "failed_requests": result["failed_total"],
        "peak_rss_gib": result["memory"]["peak_rss_gib"],
    }
    goals = {
        "failed_requests": {
            "goal": "0",
            "value": summary["failed_requests"],
            "met": summary["failed_requests"] == 0,
        },
        "move_to_first_new_response_p99_s": {
            "goal": f"<= {GOAL_SWITCH_S} (issue 16; the max of the moves)",
            "value": None
            if summary["to_first_new_ms_max"] is None
            else summary["to_first_new_ms_max"] / 1000,
            "met": bool(to_first) and missing == 0 and max(to_first) <= GOAL_SWITCH_S * 1000,
        },
    }
    payload = {
        "benchmark": NAME,
        "quick": quick,
        "config": cfg,
        "environment": env,
        "load_before": load,
        "summary": summary,
        "goals": goals,
        "result": result,
    }
    st, sw = result["steady"], result["during_swaps"]
    swap_ratio = result["throughput_ratio_during_swaps"]
    pss_gib = (result["memory"].get("pss_snapshot") or {}).get("pss_gib")
    md = [
        f"# Hot-swap under load{' (quick smoke run)' if quick else ''}",
        "",
        f"{env['date_utc']}, commit {env['git_commit']}, {env['cpu_count']} CPUs, load average before "
        f"{load['loadavg_1_5_15']}. {cfg['concurrency']} closed-loop clients streaming chat completions "
        f"(max_tokens={cfg['max_tokens']}) to `{ADAPTER}` for {cfg['duration_s']:.0f} s while "
        f"`{ADAPTER}@{ALIAS}` is moved {cfg['swaps']} times, rolled back, then moved to a version registered "
        "in the same call, plus one probe client "
        "(max_tokens=1, back to back). tuneloop poll interval 0.2 s (default), one replica, engine step "
        f"budget (max_num_batched_tokens) {cfg['max_num_batched_tokens'] or STEP_BUDGET_DEFAULT}.",
        "",
        "## Summary",
        "",
    ]
    md.append(
        md_table(
            ["measure", "value"],
            [
                [
                    "failed requests (load + probe)",
                    f"{result['failed_total']} of {result['load_requests'] + result['probe_requests']}",
                ],
                ["alias changes (failed)", f"{summary['changes']} ({summary['changes_failed']})"],
                [
                    "move (swap, rollback) call → first response by the new version, median / max ms",
                    f"{fmt(summary['to_first_new_ms_median'], 0)} / {fmt(summary['to_first_new_ms_max'], 0)}",
                ],
                [
                    "register + move in one call (a version never loaded) → first response by it, ms",
                    fmt(summary["register_and_move_to_new_ms"], 0),
                ],
                [
                    "swap call duration, median / max ms",
                    f"{fmt(summary['call_ms_median'], 0)} / {fmt(summary['call_ms_max'], 0)}",
                ],
                [
                    "swap call → routing switched (`GET /v1/models` every 25 ms), median / max ms",
                    f"{fmt(summary['to_routing_switch_ms_median'], 0)} / "
                    f"{fmt(summary['to_routing_switch_ms_max'], 0)}",
                ],
                [
                    "call returned → first response by the new version, median ms",
                    fmt(summary["first_new_after_call_returned_ms_median"], 0),
                ],
                [
                    "header probe: request → response headers, median / p99 / max ms",
                    f"{fmt(result['probe_headers_ms_p50'], 0)} / {fmt(result['probe_headers_ms_p99'], 0)} / "
                    f"{fmt(result['probe_headers_ms_max'], 0)}",
                ],
                [
                    "`GET /admin/adapters` latency (runs in a worker thread), median / p99 / max ms",
                    f"{fmt(result['admin_read_ms_p50'], 0)} / {fmt(result['admin_read_ms_p99'], 0)} / "
                    f"{fmt(result['admin_read_ms_max'], 0)}",
                ],
                [
                    "`GET /v1/models` latency, median / p99 / max ms",
                    f"{fmt(result['routing_poll_ms_p50'], 0)} / {fmt(result['routing_poll_ms_p99'], 0)} / "
                    f"{fmt(result['routing_poll_ms_max'], 0)}",
                ],
                [
                    "swap call → first *completed* load request served by the new version, median ms",
                    fmt(summary["to_first_new_completed_ms_median"], 0),
                ],
                [
                    "stale responses (old version, request started after the call returned)",
                    summary["stale_responses"],
                ],
                [
                    "tokens/s steady → during swaps (ratio)",
                    f"{fmt(st['tokens_per_s'])} → {fmt(sw['tokens_per_s'])} ({fmt(swap_ratio, 3)})",
                ],
                ["TTFT p50 ms steady → during swaps", f"{fmt(st['ttft_ms_p50'])} → {fmt(sw['ttft_ms_p50'])}"],
                [
                    "other CPU cores steady / during swaps",
                    f"{fmt(st['resources']['other_cores'], 2)} / {fmt(sw['resources']['other_cores'], 2)}",
                ],
                [
                    "peak RSS of the service GiB (PSS snapshot)",
                    f"{fmt(summary['peak_rss_gib'], 2)} ({fmt(pss_gib, 2)})",
                ],
            ],
        )
    )
    md += ["", "## Goals", ""]
    md.append(goals_table(goals))
    md += ["", "## Each change", ""]
    md.append(
        md_table(
            [
                "#",
                "kind",
                "to",
                "call ms",
                "server staged ms",
                "→ first new response ms",
                "→ routing switch ms",
                "after call returned ms",
                "→ first completed load response ms",
                "stale",
                "status",
            ],
            [
                [
                    i + 1,
                    c["kind"],
                    c["to"],
                    c["call_ms"],
                    c["server_staged_ms"],
                    c["to_first_new_response_ms"],
                    c["to_routing_switch_ms"],
                    c["first_new_after_call_returned_ms"],
                    c["to_first_new_completed_load_response_ms"],
                    c["stale_responses_after_call"],
                    c["status"],
                ]
                for i, c in enumerate(changes)
            ],
            digits=0,
        )
    )
    if result["failed_errors_sample"]:
        md += ["", "Errors seen: " + "; ".join(f"`{e}`" for e in result["failed_errors_sample"])]
    md += ["", f"Run: `python -m benchmarks.{NAME}` (`--quick` for a smoke run)."]
    return payload, "\n".join(md)


def run_once(model_path: Path, args: argparse.Namespace, cfg: dict[str, Any], cell: str) -> dict[str, Any]:
    """Start a service as `cell` says (scheduler, preloading), make three adapters, measure the changes."""
    policy, preload = CELLS[cell]
    with workdir("tuneloop-bench-hotswap-") as wd:
        log(f"[{cell}] making adapters")
        made = {
            v: make_peft_adapter(
                model_path,
                wd / "adapters" / v,
                seed=10 + i,
                r=16,
                target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
            )
            for i, v in enumerate(("v1", "v2", "v3"))
        }
        server, setup = tuneloop_server(
            model_path,
            wd,
            nice=args.nice,
            ray_worker_niceness=args.ray_worker_niceness,
            engine={
                "scheduling_policy": policy,
                **({"max_num_batched_tokens": budget} if (budget := cfg["max_num_batched_tokens"]) else {}),
            },
            serving={"preload_new_versions": preload},
        )
        folders = {
            v: Path(shutil.copytree(src, setup.incoming / f"{ADAPTER}-{v}")) for v, src in made.items()
        }
        server.name = f"tuneloop-{cell}"
        return measure_on(server, lambda: measure(server, folders, args, cfg))


def comparison(payloads: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The cells side by side (same run): the first swap, the other moves, the cold register-and-move."""
    rows: list[list[Any]] = []
    out: dict[str, Any] = {}
    for cell, p in payloads.items():
        changes = p["result"]["changes"]
        moves = [c for c in changes if c["kind"] != "register"]
        cold = next((c for c in changes if c["kind"] == "register"), None)
        to_new = [c["to_first_new_response_ms"] for c in moves if c["to_first_new_response_ms"] is not None]
        out[cell] = {
            "first_swap_to_new_ms": moves[0]["to_first_new_response_ms"] if moves else None,
            "first_swap_server_staged_ms": moves[0]["server_staged_ms"] if moves else None,
            "moves_to_new_ms_median": median(to_new),
            "moves_to_new_ms_max": max(to_new, default=None),
            "moves_without_new_response": sum(1 for c in moves if c["to_first_new_response_ms"] is None),
            "register_and_move_to_new_ms": cold["to_first_new_response_ms"] if cold else None,
            "register_and_move_server_staged_ms": cold["server_staged_ms"] if cold else None,
            "failed_requests": p["summary"]["failed_requests"],
            "tokens_per_s_steady": p["result"]["steady"]["tokens_per_s"],
        }
        o = out[cell]
        rows.append(
            [
                cell,
                fmt(o["first_swap_to_new_ms"], 0),
                fmt(o["first_swap_server_staged_ms"], 0),
                fmt(o["moves_to_new_ms_median"], 0),
                fmt(o["moves_to_new_ms_max"], 0),
                fmt(o["register_and_move_to_new_ms"], 0),
                fmt(o["register_and_move_server_staged_ms"], 0),
                fmt(o["tokens_per_s_steady"]),
                o["failed_requests"],
            ]
        )
    md = [
        "## The services side by side",
        "",
        "Same machine, same run, one after the other. `fcfs`: vLLM's first-come-first-served scheduler. "
        "`priority-no-preload`: staging's smoke generation overtakes queued client requests, and v2 loads "
        "when the first swap stages it. `priority` (tuneloop's defaults): v2, registered while the service "
        "runs, is loaded and smoke-tested into a free slot at once, so the first swap finds it resident. "
        "The moves are the swaps and the rollback; *register + move* registers a third version and moves "
        "the alias to it in the same call, under the load (no replica has seen it: the cold case).",
        "",
        md_table(
            [
                "service",
                "first swap → new version ms",
                "its server staging ms",
                "all moves median ms",
                "all moves max ms",
                "register + move → new version ms",
                "its server staging ms",
                "steady tokens/s",
                "failed",
            ],
            rows,
        ),
    ]
    pairs = (  # (baseline, cell, measure, what it compares): each pair differs in one setting
        ("fcfs", "priority", "register_and_move_to_new_ms", "cold register + move (the scheduler)"),
        ("fcfs", "priority", "moves_to_new_ms_max", "worst move (the scheduler)"),
        ("priority-no-preload", "priority", "first_swap_to_new_ms", "first swap (preloading)"),
    )
    for a, b, measure, what in pairs:
        if a in out and b in out:
            x, y = out[a][measure], out[b][measure]
            key = f"{measure}_ratio_{a}_over_{b}".replace("-", "_")
            out[key] = (x / y) if x and y else None
            md += ["", f"{what} → new version: {a} / {b} = **{fmt(out[key], 2)}×**."]
    return out, md


def rerender(path: Path) -> int:
    """Write the markdown (and JSON) again from a results JSON of this benchmark, without measuring."""
    import json

    data = json.loads(path.read_text())
    runs = data["runs"]
    sections: list[str] = []
    for cell, p in runs.items():
        _, md = report(p["result"], p["config"], p["environment"], p["load_before"], data["quick"])
        sections += [
            "",
            md.replace("\n## ", "\n### ").replace("# Hot-swap under load", f"## service: {cell}", 1),
        ]
    summary, head = comparison(runs)
    title = f"# Hot-swap under load{' (quick smoke run)' if data['quick'] else ''}"
    payload = {**data, "comparison": summary}
    return publish_results(
        NAME, payload, "\n".join([title, "", *head, *sections]), quick=data["quick"], override=path.stem
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender is not None:
        return rerender(args.rerender)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise SystemExit(f"--cells: unknown {unknown}; choose from {', '.join(CELLS)}")
    model_path = prepare_benchmark_model()
    cfg = {
        "concurrency": args.concurrency or (4 if args.quick else 32),
        "duration_s": args.duration or (20.0 if args.quick else 60.0),
        "swaps": args.swaps if args.swaps is not None else (3 if args.quick else 10),
        "steady_s": args.steady or (10.0 if args.quick else 30.0),
        "max_tokens": args.max_tokens or (16 if args.quick else 64),
        "lead_s": 3.0,
        "max_num_batched_tokens": args.max_num_batched_tokens,  # None: the service's default
    }
    env = environment()
    load = machine_load()
    payloads: dict[str, dict[str, Any]] = {}
    sections: list[str] = []
    for cell in cells:
        result = run_once(model_path, args, cfg, cell)
        payloads[cell], md = report(result, cfg, env, load, args.quick)
        sections += [
            "",
            md.replace("\n## ", "\n### ").replace("# Hot-swap under load", f"## service: {cell}", 1),
        ]
    summary, head = comparison(payloads)
    title = f"# Hot-swap under load{' (quick smoke run)' if args.quick else ''}"
    payload = {"benchmark": NAME, "quick": args.quick, "comparison": summary, "runs": payloads}
    return publish_results(
        NAME, payload, "\n".join([title, "", *head, *sections]), quick=args.quick, override=args.name
    )


if __name__ == "__main__":
    sys.exit(main())
