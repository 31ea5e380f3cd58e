"""Benchmark: the engine step budget (vLLM's `max_num_batched_tokens`) on CPU — vLLM's default vs tuneloop's.

Question: does tuneloop's CPU default (`serving.engine.devices.DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS`) cost
throughput against vLLM's own default (2048), on the base model and on a LoRA adapter? (It was chosen for
control latency: vLLM answers adapter loads only between steps, see `serving_hotswap`.) Bare vLLM's OpenAI
server, the same engine settings as the other baselines, one server per budget, one after the other in the
same run; a closed loop of streaming clients, first on the base model, then on one LoRA adapter
(r=16 on q/k/v/o). Reported per budget: tokens/s, TTFT p50/p99, e2e p50, failed requests; the ratio is
tuneloop's budget over vLLM's.

The cost of a short step falls on long prompts: a prompt of P tokens needs ceil(P / budget) steps before
its first token. So each model also gets a *long prompt alone* cell: one client, prompts of about 1,500
tokens (each opening with its own number, so vLLM's prefix cache cannot serve a later one from an earlier
one), max_tokens=1, one after the other on an idle server; its TTFT is the prefill of the whole prompt.

Run: `python -m benchmarks.engine_step_budget` (~8 minutes on 2 cores; `--quick` for a smoke run).
Writes benchmarks/results/engine_step_budget(.json|.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    bare_vllm_server,
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
    stream_chat,
    summarize,
    workdir,
)
from serving.engine.devices import DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS
from serving.testing import make_peft_adapter

NAME = "engine_step_budget"
VLLM_DEFAULT = 2048
ADAPTER = "lora"
LONG_PROMPT_REPEATS = 150
"""A ten-token sentence this many times: a prompt of about 1,500 tokens (the server's window is 2,048)."""


def long_prompt(i: int) -> str:
    return (
        f"Document {i}. "
        + "The keeper lit the lamp before the storm came in. " * LONG_PROMPT_REPEATS
        + "Summarize the document in one word."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 4 clients, few short requests")
    p.add_argument("--concurrency", type=int, default=None, help="clients (default 32; quick 4)")
    p.add_argument("--requests", type=int, default=None, help="requests per cell (default 96; quick 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens (default 64; quick 16)")
    p.add_argument(
        "--long-requests", type=int, default=None, help="long prompts per model (default 6; quick 2)"
    )
    return p.parse_args(argv)


async def measure(url: str, model_name: str, cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The base model, then the adapter: one closed-loop cell each (after a short warm-up)."""
    out: dict[str, dict[str, Any]] = {}
    async with http_client(cfg["concurrency"]) as client:
        for label, target in (("base", model_name), ("lora", ADAPTER)):

            async def one(c: httpx.AsyncClient, idx: int, seq: int, target: str = target) -> Any:
                return await stream_chat(c, url, target, max_tokens=cfg["max_tokens"])

            await checked_warm_up(one, min(4, cfg["concurrency"]), requests=4, where=f"{target} warm-up")
            run = await run_closed_loop(one, cfg["concurrency"], num_requests=cfg["requests"], client=client)
            out[label] = summarize(run, expected_tokens=cfg["max_tokens"])
            log(f"  {target}: {fmt(out[label]['tokens_per_s'], 1)} tok/s")
            long = out[f"{label}_long_prompt"] = await long_prompt_cell(
                client, url, target, cfg["long_requests"]
            )
            log(f"  {target}, long prompt alone: TTFT p50 {fmt(long['ttft_ms_p50'], 0)} ms")
    return out


async def long_prompt_cell(client: httpx.AsyncClient, url: str, target: str, requests: int) -> dict[str, Any]:
    """One client, long prompts one after the other (max_tokens=1): TTFT is the whole prompt's prefill.
    The first (not counted) warms up and reports the prompt's length in tokens."""
    r = await client.post(
        f"{url}/v1/chat/completions", json=chat_body(target, long_prompt(0), 1, stream=False)
    )
    r.raise_for_status()

    async def one(c: httpx.AsyncClient, idx: int, seq: int) -> Any:
        return await stream_chat(c, url, target, max_tokens=1, content=long_prompt(seq + 1))

    run = await run_closed_loop(one, 1, num_requests=requests, client=client)
    return {**summarize(run), "prompt_tokens": int(r.json()["usage"]["prompt_tokens"])}


def run_budget(model_path: Path, budget: int, cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    with workdir("tuneloop-bench-budget-") as wd:
        adapter = make_peft_adapter(
            model_path, wd / "adapter", seed=7, r=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
        )
        server = bare_vllm_server(
            model_path,
            wd,
            served_name=model_path.name,
            lora_modules={ADAPTER: adapter},
            max_num_batched_tokens=budget,
        )
        server.name = f"bare-vllm-{budget}"
        return measure_on(server, lambda: measure(server.url, model_path.name, cfg))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = prepare_benchmark_model()
    cfg = {
        "concurrency": args.concurrency or (4 if args.quick else 32),
        "requests": args.requests or (8 if args.quick else 96),
        "max_tokens": args.max_tokens or (16 if args.quick else 64),
        "long_requests": args.long_requests or (2 if args.quick else 6),
    }
    env, load = environment(), machine_load()
    budgets = (VLLM_DEFAULT, DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS)
    runs = {budget: run_budget(model_path, budget, cfg) for budget in budgets}
    metrics = ("tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "e2e_ms_p50", "failed")
    rows, summary, long_rows = [], {}, []
    ours_runs, theirs_runs = runs[DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS], runs[VLLM_DEFAULT]
    for target in ("base", "lora"):
        summary[target] = ratio(ours_runs[target]["tokens_per_s"], theirs_runs[target]["tokens_per_s"])
        long = f"{target}_long_prompt"
        summary[long + "_ttft_p50"] = ratio(ours_runs[long]["ttft_ms_p50"], theirs_runs[long]["ttft_ms_p50"])
        for budget in budgets:
            cell = runs[budget][target]
            rows.append([target, budget, *(cell.get(m) for m in metrics)])
            cell = runs[budget][long]
            long_rows.append(
                [target, budget, cell["prompt_tokens"], cell["ok"], cell["ttft_ms_p50"], cell["ttft_ms_p99"]]
            )
    md = "\n".join(
        [
            "# Engine step budget on CPU: vLLM's default vs tuneloop's",
            "",
            f"{env['date_utc']}, commit {env['git_commit']}, {env['cpu_count']} CPUs, load average before "
            f"{load['loadavg_1_5_15']}. Bare vLLM OpenAI server (float32, eager, LoRA enabled, KV cache "
            "2 GiB), "
            f"one server per budget, one after the other; {cfg['concurrency']} closed-loop clients streaming "
            f"chat completions (max_tokens={cfg['max_tokens']}), {cfg['requests']} requests per cell, on the "
            "base model, then on one LoRA adapter (r=16, q/k/v/o).",
            "",
            md_table(
                [
                    "model",
                    "max_num_batched_tokens",
                    "tokens/s",
                    "TTFT p50 ms",
                    "TTFT p99 ms",
                    "e2e p50 ms",
                    "failed",
                ],
                rows,
            ),
            "",
            f"Throughput with tuneloop's budget ({DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS}) over vLLM's "
            f"({VLLM_DEFAULT}): "
            f"base **{fmt(summary['base'], 3)}**, LoRA **{fmt(summary['lora'], 3)}**.",
            "",
            "## Long prompt alone (one client, idle server, max_tokens=1)",
            "",
            md_table(
                [
                    "model",
                    "max_num_batched_tokens",
                    "prompt tokens",
                    "requests",
                    "TTFT p50 ms",
                    "TTFT p99 ms",
                ],
                long_rows,
            ),
            "",
            f"TTFT with tuneloop's budget over vLLM's (lower is better): base "
            f"**{fmt(summary['base_long_prompt_ttft_p50'], 2)}x**, LoRA "
            f"**{fmt(summary['lora_long_prompt_ttft_p50'], 2)}x**.",
            "",
            f"Run: `python -m benchmarks.{NAME}` (`--quick` for a smoke run).",
        ]
    )
    payload = {
        "benchmark": NAME,
        "quick": args.quick,
        "config": cfg,
        "environment": env,
        "load_before": load,
        "ratio_tuneloop_over_vllm_default": summary,
        "runs": {str(b): r for b, r in runs.items()},
    }
    return publish_results(NAME, payload, md, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
