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
from evals.ab import ABReport
from evals.compare import paired_deltas
from evals.gate import GateDecision
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
    label = _display_labels(runs)
    suites: dict[str, list[RunResult]] = {}
    for run in runs:
        suites.setdefault(run.suite, []).append(run)
    sections: list[Section] = []
    data: dict[str, Any] = {
        "kind": "eval",
        "generated_at": _now(),
        "confidence": confidence,
        "runs": [],
        "comparisons": [],
        "examples": [],
        "gate": decision.to_dict() if decision else None,
    }
    notes: list[str] = []

    # Runs overview
    overview = Table(
        "Runs",
        ["run", "suite", "model", "shots", "answered", "failed", "served by", "latency p50 (ms)", "complete"],
        [],
    )
    for run in runs:
        lat = _latencies(run)
        p50 = float(np.percentile(lat, 50)) if lat else float("nan")
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
                fmt(p50, 1),
                "yes" if run.complete else "NO",
            ]
        )
        data["runs"].append(
            {
                "run_id": run.run_id,
                "suite": run.suite,
                "model": run.model,
                "label": label[id(run)],
                "k_shot": run.k_shot,
                "planned": run.planned,
                "n_ok": run.n_ok,
                "n_failed": run.n_failed,
                "complete": run.complete,
                "stop_reason": run.stop_reason,
                "served_by": run.served_by(),
                "errors": run.error_counts(),
                "latency_ms_p50": p50,
                "latency_ms_mean": float(np.mean(lat)) if lat else float("nan"),
                "metrics": {m: {s: vars(v) for s, v in per.items()} for m, per in run.summaries.items()},
                "thresholds": run.threshold_results,
            }
        )
        if not run.complete:
            notes.append(
                f"{run.run_id}: incomplete ({run.n_ok}/{run.planned} answered)"
                + (f" — {run.stop_reason}" if run.stop_reason else "")
            )
    sections.append(
        Section(
            "Runs",
            "Each run is one model on one suite; failed examples are excluded from "
            "metrics and from paired comparisons.",
            [overview],
        )
    )

    # Gate decision
    if decision is not None:
        sections.append(_gate_section(decision))

    # Metrics per suite
    metric_section = Section(
        "Metrics", f"Values with {int(confidence * 100)}% bootstrap confidence intervals."
    )
    panels = []
    for suite, suite_runs in suites.items():
        metrics = list(suite_runs[0].metric_kinds)
        table = Table(f"{suite}", ["metric", *[label[id(r)] for r in suite_runs]], [])
        bars: dict[str, list[plots.BarValue]] = {}
        for metric in metrics:
            row = [metric]
            for run in suite_runs:
                summary = run.summaries.get(metric, {}).get(RunResult.ALL)
                if summary is None:
                    row.append("–")
                    continue
                row.append(f"{fmt(summary.value)} {fmt_ci(summary.low, summary.high)}")
                bars.setdefault(metric, []).append(
                    plots.BarValue(label[id(run)], summary.value, summary.low, summary.high)
                )
            table.rows.append(row)
        metric_section.tables.append(table)
        # 0-100 metrics (BLEU, chrF) get their own panel so 0-1 metrics stay readable.
        small = {m: b for m, b in bars.items() if all(abs(x.value) <= 1.5 for x in b if np.isfinite(x.value))}
        large = {m: b for m, b in bars.items() if m not in small}
        if small:
            panels.append((suite, small))
        if large:
            panels.append((f"{suite} (0-100 scale)", large))
    if panels:
        metric_section.figures.append(
            FigureImage(
                "metric_bars",
                "Metrics with confidence intervals",
                "Bars: value on all answered examples; whiskers: bootstrap CI.",
                plots.metric_bars(panels),
            )
        )
    sections.append(metric_section)

    # Paired deltas per slice
    delta_section = Section(
        "Per-slice deltas",
        "Candidate minus the suite's first run, paired on the same "
        "examples (paired bootstrap CI). Positive is better for every metric shown.",
    )
    for suite, suite_runs in suites.items():
        if len(suite_runs) < 2:
            continue
        base = suite_runs[0]
        rows: list[plots.DeltaRow] = []
        table = Table(
            f"{suite}: deltas vs {label[id(base)]}",
            [
                "candidate",
                "metric",
                "slice",
                "baseline",
                "candidate value",
                "delta",
                "CI",
                "pairs",
                "P(better)",
            ],
            [],
        )
        for cand in suite_runs[1:]:
            for metric in cand.metric_kinds:
                deltas = _paired_deltas(label, base, cand, metric, confidence, n_resamples)
                data["comparisons"].extend(deltas)
                for d in deltas:
                    table.rows.append(
                        [
                            label[id(cand)],
                            metric,
                            _scope(d["scope"]),
                            fmt(d["baseline_value"]),
                            fmt(d["candidate_value"]),
                            fmt_delta(d["delta"]),
                            fmt_ci(d["low"], d["high"]),
                            str(d["n_pairs"]),
                            fmt(d["prob_improvement"], 2),
                        ]
                    )
                    if metric == base.primary_metric:
                        passed = (
                            None
                            if not np.isfinite(d["low"])
                            else (True if d["low"] > 0 else (False if d["high"] < 0 else None))
                        )
                        rows.append(
                            plots.DeltaRow(
                                f"{label[id(cand)]} · {_scope(d['scope'])}",
                                d["delta"],
                                d["low"],
                                d["high"],
                                None,
                                passed,
                            )
                        )
            data["examples"].extend(
                {"suite": suite, "baseline": label[id(base)], "candidate": label[id(cand)], **s}
                for s in _example_swings(base, cand, base.primary_metric)
            )
        delta_section.tables.append(table)
        if rows:
            delta_section.figures.append(
                FigureImage(
                    f"deltas_{suite}",
                    f"{suite}: {base.primary_metric} deltas by slice",
                    f"Dots: candidate - {label[id(base)]}; lines: {int(confidence * 100)}% paired CI. "
                    "Green: CI above 0, "
                    "red: CI below 0, grey: inconclusive.",
                    plots.delta_forest(
                        rows,
                        title=f"{suite}: {base.primary_metric} vs {label[id(base)]}",
                        xlabel=f"delta {base.primary_metric}",
                    ),
                )
            )
    if delta_section.tables:
        sections.append(delta_section)

    # Distributions
    dist = Section("Distributions", "Per-example scores of each suite's primary metric, and request latency.")
    for suite, suite_runs in suites.items():
        primary = suite_runs[0].primary_metric
        series: dict[str, list[float]] = {
            label[id(r)]: [
                float(score)
                for e in r.examples
                if primary in e.metrics and (score := e.metrics[primary].score) is not None
            ]
            for r in suite_runs
        }
        if any(series.values()):
            dist.figures.append(
                FigureImage(
                    f"scores_{suite}",
                    f"{suite}: {primary} per example",
                    "",
                    plots.distributions(
                        series,
                        title=f"{suite}: {primary} per example",
                        xlabel=primary,
                        ylabel="share of examples",
                    ),
                )
            )
    latency = {
        f"{label[id(r)]} · {r.suite}" if len(suites) > 1 else label[id(r)]: _latencies(r) for r in runs
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
    sections.append(dist)

    # Examples
    if data["examples"]:
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
            [],
        )
        for s in data["examples"]:
            table.rows.append(
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
            )
        sections.append(
            Section("Examples", "Where the candidate gained or lost most on the primary metric.", [table])
        )

    # Errors
    error_rows = [
        [r.run_id, msg or "(no message)", str(n)] for r in runs for msg, n in r.error_counts().items()
    ]
    if error_rows:
        sections.append(
            Section(
                "Failures",
                "Requests that failed after retries (not scored).",
                [Table("Errors", ["run", "error", "count"], error_rows)],
            )
        )

    verdict = decision.summary if decision else None
    names = ", ".join(dict.fromkeys(label[id(r)] for r in runs))
    return Report(
        title=title or f"Eval report: {', '.join(suites)}",
        subtitle=f"Runs: {names}",
        verdict=verdict,
        verdict_ok=decision.passed if decision else None,
        sections=sections,
        data=data,
        notes=notes,
    )


def _gate_section(decision: GateDecision) -> Section:
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
        [],
    )
    rows: list[plots.DeltaRow] = []
    for c in decision.checks:
        ci = fmt_ci(c.ci_low, c.ci_high) if c.ci_low is not None else "–"
        table.rows.append(
            [
                c.kind,
                c.scope,
                c.metric,
                fmt(c.champion),
                fmt(c.challenger),
                fmt_delta(c.delta),
                ci,
                str(c.n_pairs),
                fmt_delta(c.bound) if c.bound is not None else "–",
                "pass" if c.passed else "FAIL",
                c.reason,
            ]
        )
        if c.kind in ("improvement", "non_inferiority") and c.delta is not None:
            bound = c.bound if c.higher_is_better else (-c.bound if c.bound is not None else None)
            rows.append(
                plots.DeltaRow(
                    f"{c.kind.replace('_', '-')} · {c.scope}",
                    c.delta,
                    c.ci_low or float("nan"),
                    c.ci_high or float("nan"),
                    bound,
                    c.passed,
                )
            )
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


# ---------------------------------------------------------------- A/B report


def ab_document(report: ABReport, *, title: str | None = None) -> Report:
    """The HTML/Markdown/JSON document for a live A/B analysis."""
    sections: list[Section] = []
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
            *[n for n in _score_names(report)],
            "latency p50",
            "latency p95",
            "completion tokens",
        ],
        [],
    )
    for arm in report.arms:
        v = arm.values
        arm_table.rows.append(
            [
                arm.arm + (" (control)" if arm.arm == report.control else ""),
                str(arm.requests),
                fmt(arm.share),
                ", ".join(f"{k} ×{n}" for k, n in sorted(arm.served.items())),
                fmt(v["error_rate"]),
                fmt(v["feedback_rate"]),
                f"{fmt(v['thumbs_up_rate'])} (n={arm.counts['thumbs_up_rate']})",
                f"{fmt(v['rating'])} (n={arm.counts['rating']})",
                *[f"{fmt(v[n])} (n={arm.counts[n]})" for n in _score_names(report)],
                fmt(v["latency_p50_ms"], 1),
                fmt(v["latency_p95_ms"], 1),
                fmt(v["completion_tokens"], 1),
            ]
        )
    sections.append(
        Section(
            "Arms",
            f"Requests from {report.first_request} to {report.last_request}; shadow copies excluded.",
            [arm_table],
        )
    )
    for comparison in report.comparisons:
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
            [],
        )
        for o in comparison.outcomes:
            table.rows.append(
                [
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
            )
        note = ""
        if comparison.sample_size:
            s = comparison.sample_size
            note = (
                f"Sample size: a fixed-horizon test of {s['outcome']} needs {s['n_per_arm']} "
                "requests per arm "
                f"to detect {fmt_delta(s['mde'])} with power {s['power']:.0%} at alpha {s['alpha']:g}."
            )
        table.note = note
        section = Section(
            f"Tests: {comparison.arm} vs {comparison.control}",
            "★ = primary outcome. Fixed-horizon p-values are valid only at a pre-planned sample size; "
            "the always-valid p-value and sequential bound (mSPRT) stay valid however often the "
            "report is read.",
            [table],
        )
        sections.append(section)
    if report.srm is not None:
        srm = report.srm
        sections.append(
            Section(
                "Sample ratio",
                "",
                [
                    Table(
                        "Sample ratio mismatch check",
                        ["arm", "observed", "expected share", "observed share"],
                        [
                            [
                                arm,
                                str(n),
                                fmt(srm["expected_share"][arm]),
                                fmt(n / max(1, sum(srm["observed"].values()))),
                            ]
                            for arm, n in srm["observed"].items()
                        ],
                        note=f"chi2 = {srm['chi2']:.3f}, p = {srm['p_value']:.3g} "
                        f"(mismatch if p < {srm['threshold']:g}): "
                        + ("MISMATCH" if srm["mismatch"] else "consistent with the configured split"),
                    )
                ],
            )
        )
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
        figures.append(
            FigureImage(
                "primary_distribution",
                f"{report.primary} per request",
                "",
                plots.distributions(
                    report.distributions[report.primary],
                    title=f"{report.primary} per request",
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
    if figures:
        sections.append(Section("Plots", "", figures=figures))
    verdict_ok = None
    if report.problems:
        verdict_ok = False
    elif any(
        o.sequential_rejected and o.outcome == report.primary and o.verdict == "treatment better"
        for c in report.comparisons
        for o in c.outcomes
    ):
        verdict_ok = True
    data = {"kind": "ab", **report.to_dict()}
    return Report(
        title=title or f"A/B experiment: {report.experiment}",
        subtitle=f"Control: {report.control}; primary outcome: {report.primary or '–'}",
        verdict=report.recommendation,
        verdict_ok=verdict_ok,
        sections=sections,
        data=data,
        notes=list(report.problems),
    )


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
