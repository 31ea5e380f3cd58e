"""Benchmark: the eval runner (bounded concurrent pool) vs a naive sequential loop, same prompts, same model.

    python -m benchmarks.evals_runner [--base-url URL --model NAME] [--suites general_qa intents]
                                      [--concurrency 16]

Without --base-url it starts a bare vLLM OpenAI server on the prepared default model (SmolLM2-135M-Instruct,
CPU settings from ENVIRONMENT.md) for the duration of the run. The baseline is what people write first: the
official `openai` client, one request after another. Both sides send identical requests (the runner's own
messages and sampling settings); the result is examples/s and completion tokens/s for each, and their ratio.
Writes benchmarks/results/evals_runner.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import ServerError, bare_vllm_server, write_results
from common.home import tuneloop_home

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


def default_model_dir() -> Path:
    return tuneloop_home() / "models" / DEFAULT_MODEL


@contextmanager
def bare_vllm(model_dir: Path, port: int, log: Path) -> Iterator[str]:
    """A bare vLLM OpenAI server (no LoRA, 1 GiB KV cache) for the benchmark's lifetime; yields its
    `/v1` URL."""
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"default model not prepared at {model_dir}: run `tuneloop model prepare` first")
    server = bare_vllm_server(
        model_dir, log.parent, served_name=DEFAULT_MODEL, port=port, enable_lora=False, kv_cache_gib=1
    )
    server.log_path = log
    with server:
        try:
            server.start(timeout_s=900)
        except ServerError as exc:
            raise SystemExit(str(exc)) from None
        yield f"{server.url}/v1"


def build_requests(suites: list[str], model: str) -> list[tuple[list[dict[str, str]], dict[str, Any]]]:
    from evals.runner import request_settings
    from evals.suite import load_suite, load_suite_data

    requests = []
    for name in suites:
        suite = load_suite(name)
        data = load_suite_data(suite)
        settings = request_settings(suite)
        for example in data.eval_examples:
            requests.append((data.messages_for(example, 0), settings))
    return requests


def naive_sequential(
    url: str, model: str, requests: list[tuple[list[dict[str, str]], dict[str, Any]]]
) -> dict[str, Any]:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
    tokens = 0
    started = time.perf_counter()
    for messages, settings in requests:
        response = client.chat.completions.create(model=model, messages=messages, **settings)  # type: ignore[arg-type]
        tokens += response.usage.completion_tokens if response.usage else 0
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "examples": len(requests), "completion_tokens": tokens}


def runner(url: str, model: str, suites: list[str], concurrency: int) -> dict[str, Any]:
    from evals.runner import RunOptions, run_suite

    options = RunOptions(concurrency=concurrency, n_resamples=200)
    started = time.perf_counter()
    runs = [run_suite(name, model, url, options=options) for name in suites]
    elapsed = time.perf_counter() - started
    failed = sum(r.n_failed for r in runs)
    tokens = sum(e.completion_tokens or 0 for r in runs for e in r.examples)
    return {
        "seconds": elapsed,
        "examples": sum(r.n_ok for r in runs),
        "failed": failed,
        "completion_tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="existing OpenAI-compatible endpoint (default: start a bare vLLM)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--suites", nargs="+", default=["general_qa", "intents"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8812)
    args = parser.parse_args()

    def measure(url: str) -> dict[str, Any]:
        from evals.metrics import load_module

        requests = build_requests(args.suites, args.model)
        for module in ("contains_answer", "exact_match", "classification", "rouge"):
            load_module(module)  # one-time `evaluate` import, kept out of the timed part
        naive_sequential(url, args.model, requests[:2])  # warm-up
        naive = naive_sequential(url, args.model, requests)
        ours = runner(url, args.model, args.suites, args.concurrency)
        return {"naive": naive, "runner": ours}

    if args.base_url:
        measured = measure(args.base_url)
        endpoint = args.base_url
    else:
        with bare_vllm(default_model_dir(), args.port, Path("/tmp/evals_runner_bench_vllm.log")) as url:
            measured = measure(url)
        endpoint = "bare vLLM (started by the benchmark)"
    naive, ours = measured["naive"], measured["runner"]
    naive_rate = naive["examples"] / naive["seconds"]
    ours_rate = ours["examples"] / ours["seconds"]
    result = {
        "benchmark": "evals_runner",
        "endpoint": endpoint,
        "model": args.model,
        "suites": args.suites,
        "concurrency": args.concurrency,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "naive_sequential": {
            **naive,
            "examples_per_s": naive_rate,
            "completion_tokens_per_s": naive["completion_tokens"] / naive["seconds"],
        },
        "runner": {
            **ours,
            "examples_per_s": ours_rate,
            "completion_tokens_per_s": ours["completion_tokens"] / ours["seconds"],
        },
        "speedup_examples_per_s": ours_rate / naive_rate,
    }
    md = [
        "# evals runner throughput",
        "",
        f"Endpoint: {endpoint}; model {args.model}; suites {', '.join(args.suites)} "
        f"({naive['examples']} examples); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
        "(the machine is shared: absolute numbers vary, the ratio is measured in the same run).",
        "",
        "| | seconds | examples/s | completion tokens/s |",
        "|---|---|---|---|",
        f"| naive sequential loop (openai client) | {naive['seconds']:.1f} | {naive_rate:.2f} | "
        f"{result['naive_sequential']['completion_tokens_per_s']:.1f} |",
        f"| evals runner (concurrency {args.concurrency}, retries, scoring) | {ours['seconds']:.1f} | "
        f"{ours_rate:.2f} | {result['runner']['completion_tokens_per_s']:.1f} |",
        "",
        f"**Speed-up: {result['speedup_examples_per_s']:.2f}x** examples/s. The runner's time includes "
        "scoring and bootstrap summaries; the loop's does not.",
        "",
    ]
    write_results("evals_runner", result, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
