"""Reports people read: one self-contained HTML file (plots as base64 PNG), plus Markdown and JSON.

All three come from one `Report` object: tables hold the formatted numbers shown in HTML and Markdown, and
`data` holds the same numbers unformatted for JSON. Two builders:
- `eval_report(runs, decision=...)`: runs side by side per suite (metrics with CIs, paired per-slice deltas
  against the first run of each suite, score and latency distributions, biggest per-example wins/losses,
  and the gate's decision with its evidence when given);
- `ab_document(ab_report)`: a live experiment (per-arm numbers, tests, SRM, sample size, cumulative effect
  with its sequential bound, latency and score distributions).
`write_report` writes report.html, report.md (+ figures/*.png) and report.json into a folder atomically.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from evals import plots
from evals.ab import ABReport, ArmComparison, ArmSummary, OutcomeComparison
from evals.compare import paired_deltas
from evals.gate import GateCheck, GateDecision
from evals.results import RunResult, dumps_json


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class FigureImage:
    name: str
    title: str
    caption: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureImage] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str
    verdict: str | None
    verdict_ok: bool | None
    sections: list[Section]
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportFiles:
    folder: Path
    html: Path
    markdown: Path
    json: Path


def fmt(value: float | None, digits: int = 3) -> str:
    """How every number appears in HTML and Markdown."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.{max(digits - 2, 1)}f}"


def fmt_delta(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:+.3f}" if abs(value) < 10 else f"{value:+.1f}"


def fmt_ci(low: float | None, high: float | None) -> str:
    return f"[{fmt(low)}, {fmt(high)}]"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- eval report


def _latencies(run: RunResult) -> list[float]:
    return [e.latency_ms for e in run.examples if e.ok and e.latency_ms is not None]


def _display_labels(runs: Sequence[RunResult]) -> dict[int, str]:
    """A readable label per run, unique within each suite (same model twice gets '#2')."""
    labels: dict[int, str] = {}
    seen: dict[tuple[str, str], int] = {}
    for run in runs:
        key = (run.suite, run.label)
        seen[key] = seen.get(key, 0) + 1
        labels[id(run)] = run.label if seen[key] == 1 else f"{run.label} #{seen[key]}"
    return labels


def _paired_deltas(
    label: dict[int, str],
    base: RunResult,
    cand: RunResult,
    metric: str,
    confidence: float,
    n_resamples: int,
) -> list[dict[str, Any]]:
    deltas = paired_deltas(base, cand, metrics=[metric], confidence=confidence, n_resamples=n_resamples)
    return [{**asdict(d), "baseline": label[id(base)], "candidate": label[id(cand)]} for d in deltas]


def _example_swings(base: RunResult, cand: RunResult, metric: str, k: int = 3) -> list[dict[str, Any]]:
    base_by_id = base.by_id()
    swings = []
    for example in cand.examples:
        other = base_by_id.get(example.id)
        if other is None or metric not in example.metrics or metric not in other.metrics:
            continue
        a, b = other.metrics[metric].score, example.metrics[metric].score
        if a is None or b is None or a == b:
            continue
        swings.append((b - a, example, other))
    swings.sort(key=lambda item: item[0])
    picked = swings[-k:][::-1] + swings[:k]
    seen: set[str] = set()
    out = []
    for diff, example, other in picked:
        if example.id in seen:
            continue
        seen.add(example.id)
        out.append(
            {
                "id": example.id,
                "slice": example.slice,
                "delta": diff,
                "prompt": example.prompt,
                "reference": example.reference,
                "baseline": other.output,
                "candidate": example.output,
            }
        )
    return out


def _scope(scope: str) -> str:
    return "(all)" if scope == RunResult.ALL else scope


def _clip(text: str | None, n: int = 220) -> str:
    if text is None:
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass(frozen=True)
class _EvalView:
    """The runs being reported, grouped by suite (first run = baseline), with each run's display label."""

    runs: Sequence[RunResult]
    suites: dict[str, list[RunResult]]
    labels: dict[int, str]
    confidence: float
    n_resamples: int

    def label(self, run: RunResult) -> str:
        return self.labels[id(run)]

    @property
    def confidence_pct(self) -> int:
        return int(self.confidence * 100)


@dataclass
class _SuiteDeltas:
    """One suite's paired comparisons: the table, the primary metric's forest rows, and the raw data."""

    base: RunResult
    table: Table
    forest: list[plots.DeltaRow] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)


def eval_report(
    runs: Sequence[RunResult],
    *,
    decision: GateDecision | None = None,
    title: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> Report:
    """Side-by-side report of eval runs; the first run of each suite is the baseline for deltas."""
    if not runs:
        raise ValueError("no runs to report")
    suites: dict[str, list[RunResult]] = {}
    for run in runs:
        suites.setdefault(run.suite, []).append(run)
    view = _EvalView(runs, suites, _display_labels(runs), confidence, n_resamples)
    data: dict[str, Any] = {
        "kind": "eval",
        "generated_at": _now(),
        "confidence": confidence,
        "runs": [_run_data(view, run) for run in runs],
        "comparisons": [],
        "examples": [],
        "gate": decision.to_dict() if decision else None,
    }
    sections = [_runs_section(view)]
    if decision is not None:
        sections.append(_gate_section(decision))
    sections.append(_metrics_section(view))
    deltas = [
        _suite_deltas(view, suite, suite_runs) for suite, suite_runs in suites.items() if len(suite_runs) > 1
    ]
    for suite_deltas in deltas:
        data["comparisons"].extend(suite_deltas.comparisons)
        data["examples"].extend(suite_deltas.examples)
    if deltas:
        sections.append(_deltas_section(view, deltas))
    sections.append(_distributions_section(view))
    if data["examples"]:
        sections.append(_examples_section(data["examples"]))
    failures = _failures_section(runs)
    if failures is not None:
        sections.append(failures)
    names = ", ".join(dict.fromkeys(view.label(r) for r in runs))
    return Report(
        title=title or f"Eval report: {', '.join(suites)}",
        subtitle=f"Runs: {names}",
        verdict=decision.summary if decision else None,
        verdict_ok=decision.passed if decision else None,
        sections=sections,
        data=data,
        notes=_incomplete_notes(runs),
    )


def _latency_p50(run: RunResult) -> float:
    lat = _latencies(run)
    return float(np.percentile(lat, 50)) if lat else float("nan")


def _runs_section(view: _EvalView) -> Section:
    """The overview: one row per run (what was asked, what answered, who served it, how fast)."""
    overview = Table(
        "Runs",
        ["run", "suite", "model", "shots", "answered", "failed", "served by", "latency p50 (ms)", "complete"],
        [],
    )
    for run in view.runs:
        served = ", ".join(f"{k} ×{v}" for k, v in sorted(run.served_by().items())) or "–"
        overview.rows.append(
            [
                run.run_id,
                run.suite,
                run.model,
                str(run.k_shot),
                f"{run.n_ok}/{run.planned}",
                str(run.n_failed),
                served,
                fmt(_latency_p50(run), 1),
                "yes" if run.complete else "NO",
            ]
        )
    return Section(
        "Runs",
        "Each run is one model on one suite; failed examples are excluded from "
        "metrics and from paired comparisons.",
        [overview],
    )


def _run_data(view: _EvalView, run: RunResult) -> dict[str, Any]:
    """One run's entry in the JSON's `runs` list (unformatted numbers)."""
    lat = _latencies(run)
    return {
        "run_id": run.run_id,
        "suite": run.suite,
        "model": run.model,
        "label": view.label(run),
        "k_shot": run.k_shot,
        "planned": run.planned,
        "n_ok": run.n_ok,
        "n_failed": run.n_failed,
        "complete": run.complete,
        "stop_reason": run.stop_reason,
        "served_by": run.served_by(),
        "errors": run.error_counts(),
        "latency_ms_p50": _latency_p50(run),
        "latency_ms_mean": float(np.mean(lat)) if lat else float("nan"),
        "metrics": {m: {s: vars(v) for s, v in per.items()} for m, per in run.summaries.items()},
        "thresholds": run.threshold_results,
    }


def _incomplete_notes(runs: Sequence[RunResult]) -> list[str]:
    """The "read first" notes: runs that stopped before answering every example."""
    return [
        f"{run.run_id}: incomplete ({run.n_ok}/{run.planned} answered)"
        + (f" — {run.stop_reason}" if run.stop_reason else "")
        for run in runs
        if not run.complete
    ]


def _metrics_section(view: _EvalView) -> Section:
    """Per suite, each metric's value with its CI for every run, plus one bar panel per scale."""
    section = Section("Metrics", f"Values with {view.confidence_pct}% bootstrap confidence intervals.")
    panels: list[tuple[str, dict[str, list[plots.BarValue]]]] = []
    for suite, suite_runs in view.suites.items():
        table, bars = _suite_metric_table(view, suite, suite_runs)
        section.tables.append(table)
        # 0-100 metrics (BLEU, chrF) get their own panel so 0-1 metrics stay readable.
        small = {m: b for m, b in bars.items() if all(abs(x.value) <= 1.5 for x in b if np.isfinite(x.value))}
        large = {m: b for m, b in bars.items() if m not in small}
        if small:
            panels.append((suite, small))
        if large:
            panels.append((f"{suite} (0-100 scale)", large))
    if panels:
        section.figures.append(
            FigureImage(
                "metric_bars",
                "Metrics with confidence intervals",
                "Bars: value on all answered examples; whiskers: bootstrap CI.",
                plots.metric_bars(panels),
            )
        )
    return section


def _suite_metric_table(
    view: _EvalView, suite: str, suite_runs: list[RunResult]
) -> tuple[Table, dict[str, list[plots.BarValue]]]:
    """One suite's metric table (metric × run) and the bar values behind its plot panel."""
    table = Table(f"{suite}", ["metric", *[view.label(r) for r in suite_runs]], [])
    bars: dict[str, list[plots.BarValue]] = {}
    for metric in list(suite_runs[0].metric_kinds):
        row = [metric]
        for run in suite_runs:
            summary = run.summaries.get(metric, {}).get(RunResult.ALL)
            if summary is None:
                row.append("–")
                continue
            row.append(f"{fmt(summary.value)} {fmt_ci(summary.low, summary.high)}")
            bars.setdefault(metric, []).append(
                plots.BarValue(view.label(run), summary.value, summary.low, summary.high)
            )
        table.rows.append(row)
    return table, bars


_DELTA_HEADERS = [
    "candidate",
    "metric",
    "slice",
    "baseline",
    "candidate value",
    "delta",
    "CI",
    "pairs",
    "P(better)",
]


def _suite_deltas(view: _EvalView, suite: str, suite_runs: list[RunResult]) -> _SuiteDeltas:
    """Every later run of a suite against its first: paired deltas per metric and slice, biggest swings."""
    base = suite_runs[0]
    out = _SuiteDeltas(base, Table(f"{suite}: deltas vs {view.label(base)}", list(_DELTA_HEADERS), []))
    for cand in suite_runs[1:]:
        for metric in cand.metric_kinds:
            deltas = _paired_deltas(view.labels, base, cand, metric, view.confidence, view.n_resamples)
            out.comparisons.extend(deltas)
            for d in deltas:
                out.table.rows.append(_delta_row(view.label(cand), metric, d))
                if metric == base.primary_metric:
                    out.forest.append(_delta_forest_row(view.label(cand), d))
        out.examples.extend(
            {"suite": suite, "baseline": view.label(base), "candidate": view.label(cand), **s}
            for s in _example_swings(base, cand, base.primary_metric)
        )
    return out


def _delta_row(candidate: str, metric: str, d: dict[str, Any]) -> list[str]:
    return [
        candidate,
        metric,
        _scope(d["scope"]),
        fmt(d["baseline_value"]),
        fmt(d["candidate_value"]),
        fmt_delta(d["delta"]),
        fmt_ci(d["low"], d["high"]),
        str(d["n_pairs"]),
        fmt(d["prob_improvement"], 2),
    ]


def _ci_side(low: float, high: float) -> bool | None:
    """True if the CI is above 0, False if below, None if it straddles 0 or is undefined."""
    if not np.isfinite(low):
        return None
    return True if low > 0 else (False if high < 0 else None)


def _delta_forest_row(candidate: str, d: dict[str, Any]) -> plots.DeltaRow:
    return plots.DeltaRow(
        f"{candidate} · {_scope(d['scope'])}",
        d["delta"],
        d["low"],
        d["high"],
        None,
        _ci_side(d["low"], d["high"]),
    )


def _deltas_section(view: _EvalView, deltas: list[_SuiteDeltas]) -> Section:
    """The per-slice deltas: one table per suite with a forest plot of its primary metric."""
    section = Section(
        "Per-slice deltas",
        "Candidate minus the suite's first run, paired on the same "
        "examples (paired bootstrap CI). Positive is better for every metric shown.",
    )
    for suite_deltas in deltas:
        section.tables.append(suite_deltas.table)
        if suite_deltas.forest:
            section.figures.append(_delta_forest_figure(view, suite_deltas.base, suite_deltas.forest))
    return section


def _delta_forest_figure(view: _EvalView, base: RunResult, rows: list[plots.DeltaRow]) -> FigureImage:
    suite, metric, base_label = base.suite, base.primary_metric, view.label(base)
    return FigureImage(
        f"deltas_{suite}",
        f"{suite}: {metric} deltas by slice",
        f"Dots: candidate - {base_label}; lines: {view.confidence_pct}% paired CI. "
        "Green: CI above 0, "
        "red: CI below 0, grey: inconclusive.",
        plots.delta_forest(rows, title=f"{suite}: {metric} vs {base_label}", xlabel=f"delta {metric}"),
    )


def _distributions_section(view: _EvalView) -> Section:
    """Per-example score histograms of each suite's primary metric, and one latency histogram."""
    dist = Section("Distributions", "Per-example scores of each suite's primary metric, and request latency.")
    for suite, suite_runs in view.suites.items():
        primary = suite_runs[0].primary_metric
        series: dict[str, list[float]] = {
            view.label(r): [
                float(score)
                for e in r.examples
                if primary in e.metrics and (score := e.metrics[primary].score) is not None
            ]
            for r in suite_runs
        }
        if any(series.values()):
            title = f"{suite}: {primary} per example"
            dist.figures.append(
                FigureImage(
                    f"scores_{suite}",
                    title,
                    "",
                    plots.distributions(series, title=title, xlabel=primary, ylabel="share of examples"),
                )
            )
    latency = {
        f"{view.label(r)} · {r.suite}" if len(view.suites) > 1 else view.label(r): _latencies(r)
        for r in view.runs
    }
    if any(latency.values()):
        dist.figures.append(
            FigureImage(
                "latency",
                "Latency per request",
                "As seen by the eval runner (client side).",
                plots.distributions(
                    latency,
                    title="Latency per request",
                    xlabel="latency (ms)",
                    unit_range=False,
                    ylabel="share of requests",
                ),
            )
        )
    return dist


def _examples_section(examples: list[dict[str, Any]]) -> Section:
    """The biggest per-example wins and losses on the primary metric, with both answers."""
    table = Table(
        "Biggest per-example changes",
        [
            "suite",
            "example",
            "slice",
            "delta",
            "prompt",
            "reference",
            "baseline answer",
            "candidate answer",
        ],
        [
            [
                s["suite"],
                s["id"],
                s["slice"] or "–",
                fmt_delta(s["delta"]),
                _clip(s["prompt"]),
                _clip(s["reference"], 80),
                _clip(s["baseline"]),
                _clip(s["candidate"]),
            ]
            for s in examples
        ],
    )
    return Section("Examples", "Where the candidate gained or lost most on the primary metric.", [table])


def _failures_section(runs: Sequence[RunResult]) -> Section | None:
    """Requests that failed after retries, counted per run and message; None when there were none."""
    error_rows = [
        [r.run_id, msg or "(no message)", str(n)] for r in runs for msg, n in r.error_counts().items()
    ]
    if not error_rows:
        return None
    return Section(
        "Failures",
        "Requests that failed after retries (not scored).",
        [Table("Errors", ["run", "error", "count"], error_rows)],
    )


def _gate_section(decision: GateDecision) -> Section:
    """The promotion gate: every check with its evidence, and a forest plot of the paired deltas."""
    table = Table(
        "Checks",
        [
            "check",
            "scope",
            "metric",
            "champion",
            "challenger",
            "delta",
            "CI",
            "pairs",
            "bound",
            "result",
            "reason",
        ],
        [_gate_row(c) for c in decision.checks],
    )
    rows = [row for c in decision.checks if (row := _gate_forest_row(c)) is not None]
    section = Section(
        "Promotion gate",
        f"Challenger {decision.challenger.get('model')} vs champion "
        f"{decision.champion.get('model')}. Every check must pass.",
        [table],
    )
    if rows:
        section.figures.append(
            FigureImage(
                "gate",
                "Gate evidence",
                "Dots: challenger - champion; lines: paired bootstrap CI; dashed ticks: the "
                "bound the CI's lower end must clear (0 or the min improvement for targets, "
                "-margin for regressions).",
                plots.delta_forest(rows, title="Gate: challenger - champion", xlabel="delta"),
            )
        )
    return section


def _gate_row(c: GateCheck) -> list[str]:
    return [
        c.kind,
        c.scope,
        c.metric,
        fmt(c.champion),
        fmt(c.challenger),
        fmt_delta(c.delta),
        fmt_ci(c.ci_low, c.ci_high) if c.ci_low is not None else "–",
        str(c.n_pairs),
        fmt_delta(c.bound) if c.bound is not None else "–",
        "pass" if c.passed else "FAIL",
        c.reason,
    ]


def _gate_forest_row(c: GateCheck) -> plots.DeltaRow | None:
    """A delta check (improvement, non-inferiority) as a forest row, its bound flipped for lower-is-better."""
    if c.kind not in ("improvement", "non_inferiority") or c.delta is None:
        return None
    bound = c.bound if c.higher_is_better else (-c.bound if c.bound is not None else None)
    return plots.DeltaRow(
        f"{c.kind.replace('_', '-')} · {c.scope}",
        c.delta,
        c.ci_low or float("nan"),
        c.ci_high or float("nan"),
        bound,
        c.passed,
    )


# ---------------------------------------------------------------- A/B report


def ab_document(report: ABReport, *, title: str | None = None) -> Report:
    """The HTML/Markdown/JSON document for a live A/B analysis."""
    sections = [_ab_arms_section(report)]
    sections += [_ab_tests_section(report, comparison) for comparison in report.comparisons]
    if report.srm is not None:
        sections.append(_ab_srm_section(report.srm))
    figures = _ab_figures(report)
    if figures:
        sections.append(Section("Plots", "", figures=figures))
    return Report(
        title=title or f"A/B experiment: {report.experiment}",
        subtitle=f"Control: {report.control}; primary outcome: {report.primary or '–'}",
        verdict=report.recommendation,
        verdict_ok=_ab_verdict_ok(report),
        sections=sections,
        data={"kind": "ab", **report.to_dict()},
        notes=list(report.problems),
    )


def _ab_verdict_ok(report: ABReport) -> bool | None:
    """False with problems; True once the primary outcome is sequentially better; else undecided."""
    if report.problems:
        return False
    if any(
        o.sequential_rejected and o.outcome == report.primary and o.verdict == "treatment better"
        for c in report.comparisons
        for o in c.outcomes
    ):
        return True
    return None


def _ab_arms_section(report: ABReport) -> Section:
    """Per-arm traffic, outcome rates, score means and latency, one row per arm."""
    scores = _score_names(report)
    arm_table = Table(
        "Arms",
        [
            "arm",
            "requests",
            "share",
            "served",
            "error rate",
            "feedback rate",
            "thumbs-up",
            "rating",
            *scores,
            "latency p50",
            "latency p95",
            "completion tokens",
        ],
        [_ab_arm_row(report, arm, scores) for arm in report.arms],
    )
    return Section(
        "Arms",
        f"Requests from {report.first_request} to {report.last_request}; shadow copies excluded.",
        [arm_table],
    )


def _ab_arm_row(report: ABReport, arm: ArmSummary, scores: list[str]) -> list[str]:
    v = arm.values
    return [
        arm.arm + (" (control)" if arm.arm == report.control else ""),
        str(arm.requests),
        fmt(arm.share),
        ", ".join(f"{k} ×{n}" for k, n in sorted(arm.served.items())),
        fmt(v["error_rate"]),
        fmt(v["feedback_rate"]),
        f"{fmt(v['thumbs_up_rate'])} (n={arm.counts['thumbs_up_rate']})",
        f"{fmt(v['rating'])} (n={arm.counts['rating']})",
        *[f"{fmt(v[n])} (n={arm.counts[n]})" for n in scores],
        fmt(v["latency_p50_ms"], 1),
        fmt(v["latency_p95_ms"], 1),
        fmt(v["completion_tokens"], 1),
    ]


def _ab_tests_section(report: ABReport, comparison: ArmComparison) -> Section:
    """One treatment arm against control: every outcome's test, CI and sequential bound."""
    table = Table(
        f"{comparison.arm} vs {comparison.control}",
        [
            "outcome",
            "control",
            "treatment",
            "diff",
            f"{int((1 - report.alpha) * 100)}% CI",
            "test",
            "p",
            "always-valid p",
            "sequential bound",
            "n (c/t)",
            "verdict",
        ],
        [_ab_outcome_row(report, o) for o in comparison.outcomes],
        note=_sample_size_note(comparison.sample_size),
    )
    return Section(
        f"Tests: {comparison.arm} vs {comparison.control}",
        "★ = primary outcome. Fixed-horizon p-values are valid only at a pre-planned sample size; "
        "the always-valid p-value and sequential bound (mSPRT) stay valid however often the "
        "report is read.",
        [table],
    )


def _ab_outcome_row(report: ABReport, o: OutcomeComparison) -> list[str]:
    return [
        o.outcome + (" ★" if o.outcome == report.primary else ""),
        fmt(o.control),
        fmt(o.treatment),
        fmt_delta(o.diff),
        fmt_ci(o.ci_low, o.ci_high),
        o.test,
        f"{o.p_value:.3g}",
        f"{o.sequential_p:.3g}",
        fmt_ci(o.sequential_low, o.sequential_high),
        f"{o.n_control}/{o.n_treatment}",
        o.verdict,
    ]


def _sample_size_note(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    return (
        f"Sample size: a fixed-horizon test of {s['outcome']} needs {s['n_per_arm']} "
        "requests per arm "
        f"to detect {fmt_delta(s['mde'])} with power {s['power']:.0%} at alpha {s['alpha']:g}."
    )


def _ab_srm_section(srm: dict[str, Any]) -> Section:
    """The sample-ratio-mismatch check: observed against configured shares, with its chi-squared test."""
    total = max(1, sum(srm["observed"].values()))
    table = Table(
        "Sample ratio mismatch check",
        ["arm", "observed", "expected share", "observed share"],
        [
            [arm, str(n), fmt(srm["expected_share"][arm]), fmt(n / total)]
            for arm, n in srm["observed"].items()
        ],
        note=f"chi2 = {srm['chi2']:.3f}, p = {srm['p_value']:.3g} "
        f"(mismatch if p < {srm['threshold']:g}): "
        + ("MISMATCH" if srm["mismatch"] else "consistent with the configured split"),
    )
    return Section("Sample ratio", "", [table])


def _ab_figures(report: ABReport) -> list[FigureImage]:
    """Cumulative effect of the primary outcome, its per-request distribution, and latency (when known)."""
    figures = []
    if report.paths and report.primary:
        figures.append(
            FigureImage(
                "cumulative_effect",
                "Cumulative effect",
                "The estimate settles as traffic "
                "accumulates; the band is the always-valid bound: once it excludes 0 the "
                "experiment may stop.",
                plots.cumulative_effect(
                    [
                        plots.EffectPath(p.arm, p.n_total, p.estimate, p.low, p.high, p.p_value)
                        for p in report.paths
                    ],
                    outcome=report.primary,
                    alpha=report.alpha,
                ),
            )
        )
    if report.primary and report.primary in report.distributions:
        title = f"{report.primary} per request"
        figures.append(
            FigureImage(
                "primary_distribution",
                title,
                "",
                plots.distributions(
                    report.distributions[report.primary],
                    title=title,
                    xlabel=report.primary,
                    ylabel="share of requests",
                ),
            )
        )
    if "latency_ms" in report.distributions:
        figures.append(
            FigureImage(
                "latency",
                "Latency per request",
                "Successful requests, server-side.",
                plots.distributions(
                    report.distributions["latency_ms"],
                    title="Latency per request",
                    xlabel="latency (ms)",
                    bins=30,
                    unit_range=False,
                    ylabel="share of requests",
                ),
            )
        )
    return figures


def _score_names(report: ABReport) -> list[str]:
    names: list[str] = []
    for arm in report.arms:
        for name in arm.values:
            if name.startswith("score:") and name not in names:
                names.append(name)
    return names


# ---------------------------------------------------------------- rendering

TEMPLATES_DIR = Path(__file__).parent / "templates"
_HTML = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True, keep_trailing_newline=True
).get_template("report.html.j2")


def render_html(report: Report) -> str:
    return _HTML.render(r=report, generated=report.data.get("generated_at", _now()))


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, *, figure_dir: str | None = "figures") -> str:
    lines = [f"# {report.title}", "", f"_{report.subtitle}_", ""]
    if report.verdict:
        mark = "✅" if report.verdict_ok else ("❌" if report.verdict_ok is False else "ℹ️")
        lines += [f"**{mark} {report.verdict}**", ""]
    if report.notes:
        lines += ["> **Read first:**"] + [f"> - {n}" for n in report.notes] + [""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        for table in section.tables:
            lines += [
                f"### {table.title}",
                "",
                "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
                "|" + "|".join("---" for _ in table.headers) + "|",
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
            if table.note:
                lines += [table.note, ""]
        for figure in section.figures:
            if figure_dir is not None:
                lines += [f"![{figure.title}]({figure_dir}/{figure.name}.png)", ""]
            if figure.caption:
                lines += [f"_{figure.caption}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: Report, out_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md (+ figures/) and report.json into `out_dir`, replacing it atomically."""
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "report.html").write_text(render_html(report), encoding="utf-8")
        (staging / "report.md").write_text(render_markdown(report), encoding="utf-8")
        (staging / "report.json").write_text(dumps_json(report.data, indent=2), encoding="utf-8")
        figures = [f for s in report.sections for f in s.figures]
        if figures:
            (staging / "figures").mkdir()
            for figure in figures:
                (staging / "figures" / f"{figure.name}.png").write_bytes(figure.png)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ReportFiles(target, target / "report.html", target / "report.md", target / "report.json")
