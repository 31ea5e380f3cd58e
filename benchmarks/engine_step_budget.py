"""Benchmark: the engine step budget (vLLM's `max_num_batched_tokens`) on CPU — vLLM's default vs tuneloop's.

Question: does tuneloop's CPU default (`serving.engine.devices.DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS`) cost
throughput against vLLM's own default (2048), on the base model and on a LoRA adapter? (It was chosen for
control latency: vLLM answers adapter loads only between steps, see `serving_hotswap`.) Bare vLLM's OpenAI
server, the same engine settings as the other baselines, one server per budget, one after the other in the
same run; a closed loop of streaming clients, first on the base model, then on one LoRA adapter
(r=16 on q/k/v/o). Reported per budget: tokens/s, TTFT p50/p99, e2e p50, failed requests; the ratio is
tuneloop's budget over vLLM's.

Run: `python -m benchmarks.engine_step_budget` (~6 minutes on 2 cores; `--quick` for a smoke run).
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 4 clients, few short requests")
    p.add_argument("--concurrency", type=int, default=None, help="clients (default 32; quick 4)")
    p.add_argument("--requests", type=int, default=None, help="requests per cell (default 96; quick 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="output tokens (default 64; quick 16)")
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
    return out


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
    }
    env, load = environment(), machine_load()
    budgets = (VLLM_DEFAULT, DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS)
    runs = {budget: run_budget(model_path, budget, cfg) for budget in budgets}
    metrics = ("tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "e2e_ms_p50", "failed")
    rows, summary = [], {}
    for target in ("base", "lora"):
        ours, theirs = runs[DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS][target], runs[VLLM_DEFAULT][target]
        summary[target] = ratio(ours["tokens_per_s"], theirs["tokens_per_s"])
        for budget in budgets:
            cell = runs[budget][target]
            rows.append([target, budget, *(cell.get(m) for m in metrics)])
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
