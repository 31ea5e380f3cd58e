"""SFT vs DPO vs SFT-then-DPO (vs KTO) on the same data budget and seed (issue 17): which way of using
feedback makes an adapter better on the target slice without hurting the regression slices? Two tasks:

    python -m benchmarks.preference_tuning            # support desk, full: every refund train ticket
    python -m benchmarks.preference_tuning --quick    # smoke: 48 prompts, few steps, 24 eval examples
    python -m benchmarks.preference_tuning --task triage [--quick]   # examples/ticket_triage
    python -m benchmarks.preference_tuning --stage train --artifacts DIR   # train only (e.g. on a GPU
    python -m benchmarks.preference_tuning --stage eval --artifacts DIR    # machine without vLLM), then
                                                                           # serve + evaluate them here

support (the demo's support desk, `evals.datasets.support_desk`, seed 0): N train tickets of the target
slice (refunds). Each prompt has a right answer (the ticket's answer: chosen) and a served answer a user
would correct (rejected: a confident answer about another policy, or a deflection). The arms start from
the base model and see the same N prompts:

  * sft: LoRA SFT on (prompt, chosen);
  * dpo: LoRA DPO on (prompt, chosen, rejected), from the base;
  * sft_then_dpo: the sft adapter, then DPO on the same pairs (`init_adapter`: the reference is the SFT
    adapter) - the same records, twice the optimizer steps (reported);
  * kto: LoRA KTO on the same pairs unpaired (chosen desirable, rejected undesirable), from the base.

triage (`examples/ticket_triage`): the first champion is trained from the example's train.yaml (billing /
shipping / account). The feedback is what triagers send for the security tickets of data/traffic.jsonl:
the champion answers each one (greedy, in-process with transformers + peft, as the example's clients ask:
system prompt + ticket, 6 tokens); a wrong answer is corrected (chosen = `security`, rejected = the
champion's answer), a right one accepted. Every arm starts from the champion, with the loop's recipe for
its style (loop.yaml's `recipe`, the shipped `dpo_retrain` / `kto_retrain`):

  * sft: what the loop trains - style sequential from the champion on the corrections (+ accepted answers)
    and the replay of data/train.jsonl at loop.yaml's `replay_weight` (2x);
  * dpo / kto: the correction pairs (unpaired for KTO), the champion as start and reference;
  * sft_then_dpo: the sft adapter, then the dpo arm's training from it.

Every arm of a task: the same prompts, seed and optimizer steps (max_steps; sft_then_dpo: twice), no
validation split (the held-out data is the suites'). Each adapter (and the base model) is served by
`tuneloop serve` (vLLM on CPU) and evaluated with `evals.run_suite`: support on `support_target` /
`support_regression` (contains_answer), triage on the example's suites/target.yaml / regression.yaml
(accuracy); 95 % bootstrap intervals. Writes benchmarks/results/preference_tuning.{json,md} (support) or
preference_tuning_triage.{json,md} (`_quick` for --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
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
from evals.results import read_jsonl, write_jsonl_atomic

NAME = "preference_tuning"
DEFLECTIONS = (
    "I'm not sure about that. Please contact our support team.",
    "Sorry, I can't help with this request.",
    "That depends on many factors. Please check our website.",
)
TRIAGE = ROOT / "examples" / "ticket_triage"
TRIAGE_LABEL = "security"
TRIAGE_MAX_TOKENS = 6
"""The example's clients ask for at most 6 tokens (simulate.py), as do its suites."""

ARMS = ("sft", "dpo", "sft_then_dpo", "kto")
ARMS_FILE = "arms.json"
NO_SPLIT = {"validation": 0.0, "test": 0.0}  # held-out data is the eval suites'


@dataclass(slots=True)
class ArmData:
    """What a task hands the arms: the sft arm's data sources, the preference pairs, where training starts
    (None: the base model) and the training-config templates of each style."""

    sft_sources: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    init_adapter: str | None
    sft_style: str
    templates: dict[str, dict[str, Any]]
    """style (sft, dpo, kto) -> a training config without name, base model, sources or steps."""
    params: dict[str, Any]
    """Facts about the data for the report (prompt counts, ...)."""
    extra_arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Adapters evaluated beside the arms (triage: the champion they start from)."""


@dataclass(frozen=True, slots=True)
class Task:
    """One scenario of the benchmark: its data/config builder, suites and report text."""

    result_name: str
    suites: tuple[str | Path, ...]
    """What `run_suite` is given (a shipped suite's name or a suite YAML)."""
    suite_names: tuple[str, ...]
    metric: str
    quick: tuple[int, int, int | None]
    """(prompts, steps, examples per suite) for --quick."""
    full: tuple[int, int, int | None]
    prepare: Callable[[Path, Path, int, int], ArmData]
    """(base model, work dir, prompts, seed) -> the arms' data (may train a champion first)."""
    describe: Callable[[dict[str, Any]], str]
    meaning: str


# -- support: the demo's support desk --------------------------------------------------------------------


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
    write_jsonl_atomic(path, rows)
    return path


def support_data(base: Path, work: Path, n: int, seed: int) -> ArmData:
    sft_rows, pairs = build_records(n, seed)
    shared: dict[str, Any] = {"lora": {"r": 16, "alpha": 32}, "data": {"max_seq_length": 192}}
    preference = {**shared, "preference": {"beta": 0.1}, "train": {"batch_size": 4, "learning_rate": 5e-4}}
    return ArmData(
        sft_sources=[{"path": str(_write_jsonl(work / "sft.jsonl", sft_rows))}],
        pairs=pairs,
        init_adapter=None,
        sft_style="sft",
        templates={
            "sft": {**shared, "train": {"batch_size": 4, "learning_rate": 1e-3}},
            "dpo": preference,
            "kto": preference,
        },
        params={"n_prompts": len(pairs)},
    )


def support_describe(p: dict[str, Any]) -> str:
    return (
        f"Same {p['n_prompts']} refund prompts and seed {p['seed']} for every arm, {p['steps']} optimizer "
        "steps per training (SFT-then-DPO: twice), batch 4, LoRA r16; KTO sees each pair as two unpaired "
        "records."
    )


SUPPORT_MEANING = (
    "support_target asks refund questions worded differently from training (does the adapter know the "
    "policy?), support_regression the other intents (did it forget?)."
)


# -- triage: examples/ticket_triage ----------------------------------------------------------------------


def greedy_answers(
    base: Path, adapter: Path, prompts: list[list[dict[str, str]]], max_tokens: int
) -> list[str]:
    """The adapter's greedy answers (transformers + peft in this process, the chat template vLLM uses)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    model = model.to(device).eval()
    answers = []
    with torch.inference_mode():
        for messages in prompts:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
            out = model.generate(
                ids,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            answers.append(str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip())
    return answers


def _trained(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """One in-process training (no Ray: the comparison is between recipes, not dispatch)."""
    from training.api import train

    log(f"training {name}")
    result = train(config, use_ray=False)
    result.raise_for_status()
    return {
        "adapter": result.adapter_dir,
        "metrics": result.metrics,
        "train_s": result.duration_s,
        "device": result.device,
    }


def triage_data(base: Path, work: Path, n: int, seed: int) -> ArmData:
    """Train the example's first champion, let it answer the security tickets, and turn the triagers'
    verdicts into the loop's data: corrections + accepted answers + replay (sft), correction pairs."""
    import yaml

    from monitoring.spec import RecipeSettings, load_spec

    spec = load_spec(TRIAGE / "loop.yaml")
    champion_cfg = yaml.safe_load((TRIAGE / "train.yaml").read_text(encoding="utf-8"))
    for source in champion_cfg["data"]["sources"]:
        source["path"] = str(TRIAGE / source["path"])
    champion_cfg.update(
        name="bench-triage-champion",
        base_model=str(base),
        output={"runs_dir": str(work / "runs"), "write_splits": False},
    )
    champion = _trained("the triage champion (examples/ticket_triage/train.yaml)", champion_cfg)

    system = read_jsonl(TRIAGE / "data" / "train.jsonl")[0]["messages"][0]["content"]
    tickets = [t for t in read_jsonl(TRIAGE / "data" / "traffic.jsonl") if t["label"] == TRIAGE_LABEL][:n]
    prompts = [
        [{"role": "system", "content": system}, {"role": "user", "content": t["text"]}] for t in tickets
    ]
    log(f"the champion answers {len(prompts)} {TRIAGE_LABEL} tickets (greedy, transformers + peft)")
    answers = greedy_answers(base, Path(champion["adapter"]), prompts, TRIAGE_MAX_TOKENS)
    feedback, pairs = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        right = answer.lower().split()[:1] == [TRIAGE_LABEL]  # the example's triagers' rule (simulate.py)
        feedback.append(
            {"messages": [*prompt, {"role": "assistant", "content": answer if right else TRIAGE_LABEL}]}
        )
        if not right:
            pairs.append({"prompt": prompt, "chosen": TRIAGE_LABEL, "rejected": answer})
    recipe = spec.recipe
    feedback_source: dict[str, Any] = {"path": str(_write_jsonl(work / "feedback.jsonl", feedback))}
    sources = [{**feedback_source, "name": f"feedback-{TRIAGE_LABEL}"}]
    if recipe.replay is not None:
        sources.append({"path": str(recipe.replay), "name": "replay", "weight": recipe.replay_weight})
    templates = {
        "sft": recipe.template(),
        "dpo": RecipeSettings(training="dpo_retrain").template(),
        "kto": RecipeSettings(training="kto_retrain").template(),
    }
    return ArmData(
        sft_sources=sources,
        pairs=pairs,
        init_adapter=str(champion["adapter"]),
        sft_style="sequential",  # what the loop trains from a champion (monitoring.loop._build_dataset)
        templates=templates,
        params={
            "n_prompts": len(prompts),
            "n_distinct_prompts": len({t["text"] for t in tickets}),
            "n_corrections": len(pairs),
            "n_accepted": len(prompts) - len(pairs),
            "champion_answers": dict(Counter(a.lower() for a in answers).most_common()),
            "replay_rows": len(read_jsonl(recipe.replay)) if recipe.replay else 0,
            "replay_weight": recipe.replay_weight,
            "learning_rates": {k: t.get("train", {}).get("learning_rate") for k, t in templates.items()},
            "batch_sizes": {k: t.get("train", {}).get("batch_size") for k, t in templates.items()},
        },
        extra_arms={"champion": champion},
    )


def triage_describe(p: dict[str, Any]) -> str:
    lr, bs = p.get("learning_rates", {}), p.get("batch_sizes", {})
    return (
        f"The first champion (examples/ticket_triage/train.yaml) answered the {p['n_prompts']} security "
        f"tickets of data/traffic.jsonl ({p.get('n_distinct_prompts')} distinct); its answers: "
        f"{p.get('champion_answers')}. Triagers corrected {p['n_corrections']} (chosen `security`, "
        f"rejected the champion's answer) and accepted {p.get('n_accepted')}. Every arm starts from the "
        f"champion, seed {p['seed']}, {p['steps']} optimizer steps (SFT-then-DPO: twice), with the loop's "
        f"recipe for its style: sft = sequential on the corrections + accepted answers + data/train.jsonl "
        f"({p.get('replay_rows')} rows) replayed {p.get('replay_weight', 0):g}x, batch {bs.get('sft')} "
        f"packed, lr {lr.get('sft')} (lora_retrain); dpo = the correction pairs, the champion as reference, "
        f"batch {bs.get('dpo')}, lr {lr.get('dpo')} (dpo_retrain); kto = the pairs unpaired, batch "
        f"{bs.get('kto')}, lr {lr.get('kto')} (kto_retrain). Same data budget: the same corrected "
        "prompts for every arm; only SFT also replays the old data (the loop's SFT recipe does; a "
        "preference recipe cannot replay chat records)."
    )


TRIAGE_MEANING = (
    "triage_target holds security tickets worded differently from the traffic (did the adapter learn the "
    "new label?), triage_regression billing / shipping / account tickets (did it forget?)."
)

TASKS: dict[str, Task] = {
    "support": Task(
        result_name=NAME,
        suites=("support_target", "support_regression"),
        suite_names=("support_target", "support_regression"),
        metric="contains_answer",
        quick=(48, 12, 24),
        full=(10_000, 60, None),
        prepare=support_data,
        describe=support_describe,
        meaning=SUPPORT_MEANING,
    ),
    "triage": Task(
        result_name=f"{NAME}_triage",
        suites=(TRIAGE / "suites" / "target.yaml", TRIAGE / "suites" / "regression.yaml"),
        suite_names=("triage_target", "triage_regression"),
        metric="accuracy",
        quick=(10_000, 8, None),
        full=(10_000, 30, None),
        prepare=triage_data,
        describe=triage_describe,
        meaning=TRIAGE_MEANING,
    ),
}


# -- shared: train, save/load, evaluate, report ----------------------------------------------------------


def arm_config(
    template: dict[str, Any],
    *,
    name: str,
    style: str,
    init: str | None,
    sources: list[dict[str, Any]],
    base: Path,
    work: Path,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """A training config: the style's template with this arm's name, start, data, steps and seed."""
    config = copy.deepcopy(template)
    config.update(
        name=name,
        base_model=str(base),
        style=style,
        output={"runs_dir": str(work / "runs"), "write_splits": False},
        runtime={**config.get("runtime", {}), "timeout_s": 3600},
    )
    if init is not None or style in ("dpo", "kto"):
        config["init_adapter"] = init
    config["data"] = {**config.get("data", {}), "sources": sources, "split": NO_SPLIT}
    config["train"] = {**config.get("train", {}), "max_steps": steps, "seed": seed}
    return config


def train_arms(
    task: Task, base: Path, work: Path, n: int, steps: int, seed: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Train the arms in-process; returns them (extra adapters such as a champion first) and the data's
    facts for the report."""
    data = task.prepare(base, work, n, seed)
    pair_file = _write_jsonl(work / "pairs.jsonl", data.pairs)
    kto_file = _write_jsonl(
        work / "kto.jsonl",
        [
            {"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in data.pairs
            for side in ("chosen", "rejected")
        ],
    )
    pair_sources = {"dpo": [{"path": str(pair_file)}], "kto": [{"path": str(kto_file), "template": "kto"}]}

    def config(name: str, style: str, init: str | None) -> dict[str, Any]:
        sources = data.sft_sources if style == data.sft_style else pair_sources[style]
        template = data.templates["sft" if style == data.sft_style else style]
        return arm_config(
            template,
            name=name,
            style=style,
            init=init,
            sources=sources,
            base=base,
            work=work,
            steps=steps,
            seed=seed,
        )

    def run(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        return _trained(f"{name} ({steps} steps on {data.params['n_prompts']} prompts)", cfg)

    init = data.init_adapter
    arms = {
        "sft": run("sft", config("bench-sft", data.sft_style, init)),
        "dpo": run("dpo", config("bench-dpo", "dpo", init)),
        "kto": run("kto", config("bench-kto", "kto", init)),
    }
    sft_adapter = str(arms["sft"]["adapter"])
    chained = run("sft_then_dpo (DPO from sft)", config("bench-sft-dpo", "dpo", sft_adapter))
    arms["sft_then_dpo"] = {**chained, "train_s": chained["train_s"] + arms["sft"]["train_s"]}
    return {**data.extra_arms, **{name: arms[name] for name in ARMS}}, data.params


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


def evaluate(
    task: Task, base: Path, work: Path, arms: dict[str, dict[str, Any]], limit: int | None
) -> dict[str, Any]:
    """Serve the base + the adapters and run the task's suites on each model."""
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
            for suite, suite_name in zip(task.suites, task.suite_names, strict=True):
                log(f"eval {arm} on {suite_name}")
                run = run_suite(suite, model, f"{server.url}/v1", limit=limit)
                summary = run.summaries.get(run.primary_metric, {}).get(RunResult.ALL)
                scores[arm][suite_name] = (
                    None
                    if summary is None
                    else {"value": summary.value, "low": summary.low, "high": summary.high, "n": summary.n}
                )
    return scores


def report(task: Task, payload: dict[str, Any]) -> str:
    rows = []
    extra = [a for a in payload["arms"] if a not in ARMS]  # triage: the champion the arms start from
    for arm in ("base", *extra, *ARMS):
        s = payload["scores"].get(arm, {})
        m = payload["arms"].get(arm, {})
        cells = []
        for suite in task.suite_names:
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
    setting = "quick" if p["quick"] else "full" if p["steps"] == task.full[1] else f"{p['steps']} steps"
    if trained_on.get("gpu"):
        where += f" ({trained_on['gpu']})"
    return (
        f"# Preference tuning{'' if task.result_name == NAME else ' (' + payload['task'] + ')'}: SFT vs DPO "
        "vs SFT-then-DPO vs KTO "
        f"({setting})\n\n"
        f"{task.describe(p)} Trained on {where}; every adapter served by `tuneloop serve` (vLLM) and "
        f"evaluated on up to {p['limit'] or 'all'} examples per suite, {task.metric} in % with 95 % "
        "bootstrap intervals.\n\n"
        + md_table(["arm", *task.suite_names, "train s", "final reward margin"], rows)
        + f"\n\nWhat the numbers mean: {task.meaning} "
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
    parser.add_argument(
        "--task", choices=tuple(TASKS), default="support", help="the scenario (default support)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps (support: <= 48 prompts, 24 examples per suite)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", type=int, help="optimizer steps per training (default: the task's)")
    parser.add_argument(
        "--stage", choices=("all", "train", "eval"), default="all", help="both (default), or one of them"
    )
    parser.add_argument("--artifacts", type=Path, help="train writes adapters here, eval reads them")
    args = parser.parse_args()
    if args.stage != "all" and args.artifacts is None:
        parser.error("--stage train/eval needs --artifacts DIR")
    task = TASKS[args.task]
    n, steps, limit = task.quick if args.quick else task.full
    steps = args.steps or steps
    params: dict[str, Any] = {"quick": args.quick, "steps": steps, "limit": limit, "seed": args.seed}
    base = prepare_benchmark_model()
    started = time.monotonic()
    trained_on: dict[str, Any] = {"gpu": gpu_name()}
    with workdir("tuneloop-pref-") as work:
        if args.stage == "eval":
            arms, saved = load_arms(args.artifacts)
            params, trained_on = saved["params"], {"gpu": saved["gpu"], "environment": saved["environment"]}
        else:
            arms, facts = train_arms(task, base, work, n, steps, args.seed)
            params = {**params, **facts}
        if args.stage == "train":
            save_arms(arms, params, args.artifacts, trained_on["gpu"])
            log(f"wrote the adapters and {ARMS_FILE} to {args.artifacts}")
            return 0
        scores = evaluate(task, base, work, arms, params["limit"])
    payload = {
        "benchmark": NAME,
        "task": args.task,
        "params": params,
        "arms": {k: {f: v for f, v in arm.items() if f != "adapter"} for k, arm in arms.items()},
        "scores": scores,
        "trained_on": trained_on,
        "duration_s": round(time.monotonic() - started, 1),
        "environment": environment(),
    }
    return publish_results(task.result_name, payload, report(task, payload), quick=args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
