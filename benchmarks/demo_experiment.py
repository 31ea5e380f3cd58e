"""The demo as an experiment (issue 6): does the closed loop make the served model better where the world
changed, without making it worse elsewhere, fast enough on a 2-core CPU?

    python -m benchmarks.demo_experiment                      # runs `tuneloop demo` (about 15 min)
    python -m benchmarks.demo_experiment --home DEMO_HOME     # reads a finished demo's folder

Baseline in the same run: the champion before the loop acted, evaluated by the loop's own gate on the same
held-out suites as the challenger (paired examples): the drifted slice (`support_target`, refund questions
worded differently from any training example) and the regression slices (`support_regression`: shipping,
account, billing). Goals: +30 points or more on the drifted slice's main metric (contains_answer), no
worse than -2 points on the regression slices, the whole demo within 15 minutes.

Writes benchmarks/results/demo_experiment.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.common import environment, gate_checks, write_results


def run_fresh(port: int) -> Path:
    from rich.console import Console

    from tuneloop.demo import DemoOptions, default_home, run_demo

    home = default_home()
    run_demo(DemoOptions(home=home, port=port), Console())
    return home


def collect(home: Path) -> dict[str, Any]:
    summary = json.loads((home / "demo-summary.json").read_text())
    slices = gate_checks(home / "loop" / str(summary.get("run_id")) / "evals" / "gate.json")
    suites = summary.get("suites") or {}
    target = suites.get("support_target", {})
    regression = suites.get("support_regression", {})

    def delta(s: dict[str, Any]) -> float | None:
        c, n = s.get("champion"), s.get("challenger")
        return None if c is None or n is None else 100 * (n - c)

    t = summary.get("timings", {})
    result = {
        "benchmark": "demo_experiment",
        "home": str(home),
        "outcome": summary.get("outcome"),
        "gate_passed": summary.get("gate_passed"),
        "target": {**target, "delta_points": delta(target), "goal_points": 30.0},
        "regression": {**regression, "delta_points": delta(regression), "goal_points": -2.0},
        "slices": slices,
        "drift": summary.get("drift"),
        "canary": summary.get("ab"),
        "timings_s": t,
        "whole_demo_min": (t.get("total_s") or 0) / 60,
        "drift_to_outcome_min": (t.get("drift_to_outcome_s") or 0) / 60,
        "traffic": {k: summary.get("traffic", {}).get(k) for k in ("sent", "ok", "failed")},
        "lineage": summary.get("lineage"),
        "environment": environment(),
        "load_avg_at_collection": os.getloadavg(),
    }
    result["goals"] = {
        "target_plus_30": (result["target"]["delta_points"] or -1e9) >= 30.0,
        "regression_within_2": (result["regression"]["delta_points"] or -1e9) >= -2.0,
        "whole_demo_within_15_min": result["whole_demo_min"] <= 15.0,
    }
    return result


def markdown(r: dict[str, Any]) -> str:
    def f(x: Any, d: int = 1) -> str:
        return "-" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))

    lines = [
        "# The demo as an experiment",
        "",
        f"`tuneloop demo` on 2 CPU cores (SmolLM2-135M-Instruct, vLLM CPU, LoRA through Ray). Outcome: "
        f"**{r['outcome']}** (gate passed: {r['gate_passed']}). Baseline: the champion before the loop "
        "acted, scored by the same gate on the same held-out examples (paired).",
        "",
        "| suite | metric | champion (before) | challenger (after) | Δ points | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, goal in (("target", "≥ +30"), ("regression", "≥ −2")):
        s = r[key]
        met = r["goals"]["target_plus_30" if key == "target" else "regression_within_2"]
        lines.append(
            f"| {key} | {s.get('metric', '-')} | {f(s.get('champion'), 3)} | {f(s.get('challenger'), 3)} | "
            f"{f(s.get('delta_points'))} | {goal} | {'yes' if met else 'NO'} |"
        )
    lines += ["", "Per-slice gate checks (paired bootstrap, 95% CI in points):", ""]
    lines += [
        "| scope | check | champion | challenger | Δ points | CI | n | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r["slices"]:
        ci = s["ci_points"]
        lines.append(
            f"| {s['scope']} | {s['kind']} | {f(s['champion'], 3)} | {f(s['challenger'], 3)} | "
            f"{f(s['delta_points'])} | {'-' if ci is None else f'[{ci[0]:+.1f}, {ci[1]:+.1f}]'} | {s['n']} | "
            f"{s['passed']} |"
        )
    t = r["timings_s"]
    lines += [
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {k} | {f(v, 0)} |" for k, v in t.items()],
        "",
        f"Whole demo **{r['whole_demo_min']:.1f} min** (goal ≤ 15: "
        f"{'met' if r['goals']['whole_demo_within_15_min'] else 'NOT met'}); injected drift → outcome "
        f"{r['drift_to_outcome_min']:.1f} min. Traffic: {r['traffic']['ok']} answered, "
        f"{r['traffic']['failed']} failed.",
    ]
    for d in r.get("drift") or []:
        lines.append(
            f"Drift {d['detector']}: statistic {f(d['statistic'], 4)} (threshold {f(d['threshold'], 4)}), "
            f"p={f(d['p_value'], 4)}, drifted={d['drifted']}."
        )
    if r.get("canary"):
        lines.append(f"Canary arms: {json.dumps(r['canary'], default=str)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a finished demo's folder (default: run the demo)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--note", default="", help="conditions of the run worth recording (e.g. other load)")
    args = parser.parse_args()
    home = args.home or run_fresh(args.port)
    result = collect(home)
    result["note"] = args.note
    md = markdown(result) + (f"\n\nNote: {args.note}" if args.note else "")
    json_path, md_path = write_results("demo_experiment", result, md)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
