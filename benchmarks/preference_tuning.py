"""SFT vs DPO vs SFT-then-DPO on the same data budget and seed (issue 17): which way of using feedback
makes the support adapter better on the target slice without hurting the regression slices?

    python -m benchmarks.preference_tuning            # full: every refund train ticket, more steps
    python -m benchmarks.preference_tuning --quick    # smoke: 48 prompts, few steps, 24 eval examples

Data (the demo's support desk, `evals.datasets.support_desk`, seed 0): N train tickets of the target
slice (refunds). Each prompt has a right answer (the ticket's answer: chosen) and a served answer a user
would correct (rejected: a confident answer about another policy, or a deflection). The three arms see
the same N prompts:

  * sft: LoRA SFT on (prompt, chosen);
  * dpo: LoRA DPO on (prompt, chosen, rejected), from the base;
  * sft_then_dpo: the sft adapter, then DPO on the same pairs (`init_adapter`: the reference is the SFT
    adapter) - the same records, twice the optimizer steps (reported).

Each adapter (and the base model) is served by `tuneloop serve` (vLLM on CPU) and evaluated with
`evals.run_suite` on `support_target` (refund questions worded differently from training) and
`support_regression` (shipping, account, billing), primary metric contains_answer, 95 % bootstrap
intervals. Writes benchmarks/results/preference_tuning.{json,md} (`_quick` for --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AdminClient,
    environment,
    fmt,
    log,
    md_table,
    prepare_benchmark_model,
    publish_results,
    tuneloop_server,
    workdir,
)

NAME = "preference_tuning"
SUITES = ("support_target", "support_regression")
DEFLECTIONS = (
    "I'm not sure about that. Please contact our support team.",
    "Sorry, I can't help with this request.",
    "That depends on many factors. Please check our website.",
)


def build_records(n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(sft chat rows, dpo pair rows) for the same n refund train prompts."""
    from evals.datasets.support_desk import FACTS, SYSTEM_PROMPT, generate_tickets

    rng = random.Random(seed)
    tickets = [t for t in generate_tickets(seed=0) if t.split == "train" and t.intent == "refunds"]
    rng.shuffle(tickets)
    tickets = tickets[:n]
    wrong = [f.answer for f in FACTS if f.intent != "refunds"]
    sft, pairs = [], []
    for t in tickets:
        prompt = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": t.question}]
        rejected = rng.choice(DEFLECTIONS) if rng.random() < 0.3 else rng.choice(wrong)
        sft.append({"messages": [*prompt, {"role": "assistant", "content": t.answer}]})
        pairs.append({"prompt": prompt, "chosen": t.answer, "rejected": rejected})
    return sft, pairs


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def train_arms(base: Path, work: Path, n: int, steps: int, seed: int) -> dict[str, dict[str, Any]]:
    """Train the three arms in-process (no Ray: the comparison is between recipes, not dispatch)."""
    from training.api import train

    sft_rows, pairs = build_records(n, seed)
    sft_file = _write_jsonl(work / "sft.jsonl", sft_rows)
    pair_file = _write_jsonl(work / "pairs.jsonl", pairs)
    common: dict[str, Any] = {
        "base_model": str(base),
        "lora": {"r": 16, "alpha": 32},
        "output": {"runs_dir": str(work / "runs"), "write_splits": False},
        "runtime": {"timeout_s": 3600},
    }
    split = {"validation": 0.0, "test": 0.0}  # held-out data is the eval suites'
    sft_cfg = {
        **common,
        "name": "bench-sft",
        "data": {"sources": [{"path": str(sft_file)}], "max_seq_length": 192, "split": split},
        "train": {"max_steps": steps, "batch_size": 4, "learning_rate": 1e-3, "seed": seed},
    }

    def dpo_cfg(name: str, init: str | None) -> dict[str, Any]:
        return {
            **common,
            "name": name,
            "style": "dpo",
            "init_adapter": init,
            "data": {"sources": [{"path": str(pair_file)}], "max_seq_length": 192, "split": split},
            "preference": {"beta": 0.1},
            "train": {"max_steps": steps, "batch_size": 4, "learning_rate": 5e-4, "seed": seed},
        }

    arms: dict[str, dict[str, Any]] = {}
    for name, config in (("sft", sft_cfg), ("dpo", dpo_cfg("bench-dpo", None))):
        log(f"training {name} ({steps} steps on {n} prompts)")
        result = train(config, use_ray=False)
        result.raise_for_status()
        arms[name] = {"adapter": result.adapter_dir, "metrics": result.metrics, "train_s": result.duration_s}
    log("training sft_then_dpo (DPO from the sft adapter)")
    chained = train(dpo_cfg("bench-sft-dpo", str(arms["sft"]["adapter"])), use_ray=False)
    chained.raise_for_status()
    arms["sft_then_dpo"] = {
        "adapter": chained.adapter_dir,
        "metrics": chained.metrics,
        "train_s": chained.duration_s + arms["sft"]["train_s"],
    }
    return arms


async def _register(url: str, incoming: Path, arms: dict[str, dict[str, Any]]) -> None:
    import shutil

    admin = AdminClient(url)
    try:
        for name, arm in arms.items():
            target = incoming / name
            shutil.copytree(arm["adapter"], target)
            await admin.register(target, name.replace("_", "-"), alias="champion")
    finally:
        await admin.aclose()


def evaluate(base: Path, work: Path, arms: dict[str, dict[str, Any]], limit: int | None) -> dict[str, Any]:
    """Serve the base + the adapters and run both suites on each model."""
    from evals.results import RunResult
    from evals.runner import run_suite

    server, setup = tuneloop_server(base, work, max_lora_rank=16)
    scores: dict[str, Any] = {}
    with server:
        server.start()
        asyncio.run(_register(server.url, setup.incoming, arms))
        models = {"base": "base", **{name: name.replace("_", "-") for name in arms}}
        for arm, model in models.items():
            scores[arm] = {}
            for suite in SUITES:
                log(f"eval {arm} on {suite}")
                run = run_suite(suite, "base" if model == "base" else model, f"{server.url}/v1", limit=limit)
                summary = run.summaries.get(run.primary_metric, {}).get(RunResult.ALL)
                scores[arm][suite] = (
                    None
                    if summary is None
                    else {"value": summary.value, "low": summary.low, "high": summary.high, "n": summary.n}
                )
    return scores


def report(payload: dict[str, Any]) -> str:
    rows = []
    for arm in ("base", "sft", "dpo", "sft_then_dpo"):
        s = payload["scores"].get(arm, {})
        m = payload["arms"].get(arm, {})
        cells = []
        for suite in SUITES:
            v = s.get(suite)
            cells.append(
                "-" if v is None else f"{100 * v['value']:.1f} [{100 * v['low']:.0f}, {100 * v['high']:.0f}]"
            )
        rows.append(
            [arm, *cells, fmt(m.get("train_s")), fmt(m.get("metrics", {}).get("reward_margin_last"), 2)]
        )
    p = payload["params"]
    return (
        f"# Preference tuning: SFT vs DPO vs SFT-then-DPO ({'quick' if p['quick'] else 'full'})\n\n"
        f"Same {p['n_prompts']} refund prompts and seed {p['seed']} for every arm, {p['steps']} optimizer "
        f"steps per training (SFT-then-DPO: twice), batch 4, LoRA r16; eval on up to {p['limit'] or 'all'} "
        "examples per suite, contains_answer in % with 95 % bootstrap intervals.\n\n"
        + md_table(["arm", *SUITES, "train s", "final reward margin"], rows)
        + "\n\nWhat the numbers mean: support_target asks refund questions worded differently from training "
        "(does the adapter know the policy?), support_regression the other intents (did it forget?). "
        "Intervals overlap at these sizes: a difference inside them is noise, one run, one seed, on a "
        "shared 2-core CPU (timings depend on the load).\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="<= 48 prompts, 12 steps, 24 examples per suite")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n, steps, limit = (48, 12, 24) if args.quick else (10_000, 60, None)
    base = prepare_benchmark_model()
    started = time.monotonic()
    with workdir("tuneloop-pref-") as work:
        arms = train_arms(base, work, n, steps, args.seed)
        scores = evaluate(base, work, arms, limit)
    payload = {
        "benchmark": NAME,
        "params": {
            "quick": args.quick,
            "n_prompts": min(n, len(build_records(n, args.seed)[0])),
            "steps": steps,
            "limit": limit,
            "seed": args.seed,
        },
        "arms": {k: {"train_s": v["train_s"], "metrics": v["metrics"]} for k, v in arms.items()},
        "scores": scores,
        "duration_s": round(time.monotonic() - started, 1),
        "environment": environment(),
    }
    return publish_results(NAME, payload, report(payload), quick=args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
