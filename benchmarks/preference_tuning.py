"""SFT vs DPO vs SFT-then-DPO on the same data budget and seed (issue 17): which way of using feedback
makes the support adapter better on the target slice without hurting the regression slices?

    python -m benchmarks.preference_tuning            # full: every refund train ticket, more steps
    python -m benchmarks.preference_tuning --quick    # smoke: 48 prompts, few steps, 24 eval examples
    python -m benchmarks.preference_tuning --stage train --artifacts DIR   # train only (e.g. on a GPU
    python -m benchmarks.preference_tuning --stage eval --artifacts DIR    # machine without vLLM), then
                                                                           # serve + evaluate them here

Data (the demo's support desk, `evals.datasets.support_desk`, seed 0): N train tickets of the target
slice (refunds). Each prompt has a right answer (the ticket's answer: chosen) and a served answer a user
would correct (rejected: a confident answer about another policy, or a deflection). The three arms see
the same N prompts:

  * sft: LoRA SFT on (prompt, chosen);
  * dpo: LoRA DPO on (prompt, chosen, rejected), from the base;
  * sft_then_dpo: the sft adapter, then DPO on the same pairs (`init_adapter`: the reference is the SFT
    adapter) - the same records, twice the optimizer steps (reported);
  * kto: LoRA KTO on the same pairs unpaired (chosen desirable, rejected undesirable), from the base.

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


ARMS = ("sft", "dpo", "sft_then_dpo", "kto")
ARMS_FILE = "arms.json"


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

    kto_file = _write_jsonl(
        work / "kto.jsonl",
        [
            {"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs
            for side in ("chosen", "rejected")
        ],
    )

    def preference_cfg(name: str, style: str, init: str | None) -> dict[str, Any]:
        source = {"path": str(kto_file), "template": "kto"} if style == "kto" else {"path": str(pair_file)}
        return {
            **common,
            "name": name,
            "style": style,
            "init_adapter": init,
            "data": {"sources": [source], "max_seq_length": 192, "split": split},
            "preference": {"beta": 0.1},
            "train": {"max_steps": steps, "batch_size": 4, "learning_rate": 5e-4, "seed": seed},
        }

    def run(name: str, config: dict[str, Any]) -> dict[str, Any]:
        log(f"training {name} ({steps} steps on {n} prompts)")
        result = train(config, use_ray=False)
        result.raise_for_status()
        return {
            "adapter": result.adapter_dir,
            "metrics": result.metrics,
            "train_s": result.duration_s,
            "device": result.device,
        }

    arms = {
        "sft": run("sft", sft_cfg),
        "dpo": run("dpo", preference_cfg("bench-dpo", "dpo", None)),
        "kto": run("kto", preference_cfg("bench-kto", "kto", None)),
    }
    sft_adapter = str(arms["sft"]["adapter"])
    chained = run("sft_then_dpo (DPO from sft)", preference_cfg("bench-sft-dpo", "dpo", sft_adapter))
    arms["sft_then_dpo"] = {**chained, "train_s": chained["train_s"] + arms["sft"]["train_s"]}
    return {name: arms[name] for name in ARMS}


def save_arms(
    arms: dict[str, dict[str, Any]], params: dict[str, Any], artifacts: Path, gpu: str | None
) -> None:
    """`--stage train`: the adapters and their training figures, for `--stage eval` on another machine."""
    import shutil

    artifacts.mkdir(parents=True, exist_ok=True)
    for name, arm in arms.items():
        shutil.copytree(arm["adapter"], artifacts / name, dirs_exist_ok=True)
    figures = {k: {f: v for f, v in arm.items() if f != "adapter"} for k, arm in arms.items()}
    payload = {"params": params, "arms": figures, "gpu": gpu, "environment": environment()}
    (artifacts / ARMS_FILE).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def load_arms(artifacts: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """`--stage eval`: what `save_arms` wrote (adapters point into `artifacts`)."""
    saved = json.loads((artifacts / ARMS_FILE).read_text(encoding="utf-8"))
    arms = {name: {**arm, "adapter": artifacts / name} for name, arm in saved["arms"].items()}
    return arms, saved


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
    for arm in ("base", *ARMS):
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
    devices = sorted({str(m.get("device")) for m in payload["arms"].values() if m.get("device")})
    trained_on = payload.get("trained_on") or {}
    where = ", ".join(devices) or "?"
    if trained_on.get("gpu"):
        where += f" ({trained_on['gpu']})"
    return (
        f"# Preference tuning: SFT vs DPO vs SFT-then-DPO vs KTO ({'quick' if p['quick'] else 'full'})\n\n"
        f"Same {p['n_prompts']} refund prompts and seed {p['seed']} for every arm, {p['steps']} optimizer "
        f"steps per training (SFT-then-DPO: twice), batch 4, LoRA r16; KTO sees each pair as two unpaired "
        f"records. Trained on {where}; every adapter served by `tuneloop serve` (vLLM) and evaluated on up "
        f"to {p['limit'] or 'all'} examples per suite, contains_answer in % with 95 % bootstrap "
        "intervals.\n\n"
        + md_table(["arm", *SUITES, "train s", "final reward margin"], rows)
        + "\n\nWhat the numbers mean: support_target asks refund questions worded differently from training "
        "(does the adapter know the policy?), support_regression the other intents (did it forget?). "
        "Intervals overlap at these sizes: a difference inside them is noise; one run, one seed "
        "(train times depend on the machine and its load).\n"
    )


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="<= 48 prompts, 12 steps, 24 examples per suite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--stage", choices=("all", "train", "eval"), default="all", help="both (default), or one of them"
    )
    parser.add_argument("--artifacts", type=Path, help="train writes adapters here, eval reads them")
    args = parser.parse_args()
    if args.stage != "all" and args.artifacts is None:
        parser.error("--stage train/eval needs --artifacts DIR")
    n, steps, limit = (48, 12, 24) if args.quick else (10_000, 60, None)
    params = {
        "quick": args.quick,
        "n_prompts": min(n, len(build_records(n, args.seed)[0])),
        "steps": steps,
        "limit": limit,
        "seed": args.seed,
    }
    base = prepare_benchmark_model()
    started = time.monotonic()
    trained_on: dict[str, Any] = {"gpu": gpu_name()}
    with workdir("tuneloop-pref-") as work:
        if args.stage == "eval":
            arms, saved = load_arms(args.artifacts)
            params, trained_on = saved["params"], {"gpu": saved["gpu"], "environment": saved["environment"]}
        else:
            arms = train_arms(base, work, n, steps, args.seed)
        if args.stage == "train":
            save_arms(arms, params, args.artifacts, trained_on["gpu"])
            log(f"wrote the adapters and {ARMS_FILE} to {args.artifacts}")
            return 0
        scores = evaluate(base, work, arms, params["limit"])
    payload = {
        "benchmark": NAME,
        "params": params,
        "arms": {k: {f: v for f, v in arm.items() if f != "adapter"} for k, arm in arms.items()},
        "scores": scores,
        "trained_on": trained_on,
        "duration_s": round(time.monotonic() - started, 1),
        "environment": environment(),
    }
    return publish_results(NAME, payload, report(payload), quick=args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
