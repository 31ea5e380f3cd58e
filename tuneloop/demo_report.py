"""The demo's HTML report: quality timeline per served version, drift statistic against its threshold,
the loop's events, the canary's steps, and before/after quality per suite and slice. Self-contained (plots
inlined as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from common.db import opened
from common.log_schema import requests_table, scores_table


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _quality_timeline(db_url: str, spec: Any) -> tuple[str | None, dict[str, Any]]:
    adapter, scorer, slice_key = spec.adapter, spec.quality_scorer, spec.slice_key
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with opened(db_url) as engine:
        req, sc = requests_table, scores_table
        q = (
            sa.select(req.c.created_at, req.c.served_version, req.c.tags, sc.c.score)
            .select_from(sc.join(req, req.c.id == sc.c.request_id))
            .where(sc.c.scorer == scorer, req.c.served_name == adapter, req.c.shadow_of.is_(None))
            .order_by(req.c.created_at)
        )
        with engine.connect() as conn:
            rows = conn.execute(q).all()
    if not rows:
        return None, {}
    t0 = rows[0][0]
    series: dict[str, tuple[list[float], list[float]]] = {}
    per_slice: dict[str, dict[str, list[float]]] = {}
    for at, version, tags, score in rows:
        key = (version or "base")[:12]
        xs, ys = series.setdefault(key, ([], []))
        xs.append((at - t0).total_seconds() / 60)
        ys.append(float(score))
        tagd = tags if isinstance(tags, dict) else json.loads(tags or "{}")
        per_slice.setdefault(key, {}).setdefault(str(tagd.get(slice_key) if slice_key else "all"), []).append(
            float(score)
        )
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for key, (xs, ys) in series.items():
        window = 15
        smooth = [
            sum(ys[max(0, i - window + 1) : i + 1]) / len(ys[max(0, i - window + 1) : i + 1])
            for i in range(len(ys))
        ]
        ax.plot(xs, smooth, label=f"{adapter}@{key}")
        ax.scatter(xs, ys, s=6, alpha=0.25)
    ax.set_xlabel("minutes since first request")
    ax.set_ylabel(f"{scorer} score (rolling 15)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower left")
    ax.set_title("Live quality per served version")
    img = _png(fig)
    plt.close(fig)
    slices = {v: {s: round(sum(x) / len(x), 3) for s, x in d.items()} for v, d in per_slice.items()}
    return img, slices


def _drift_plot(controller: Any) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = [e for e in controller.store.events() if e.kind == "check" and e.evidence]
    points: dict[str, tuple[list[datetime], list[float]]] = {}
    for e in checks:
        for r in e.evidence.get("reports", []):
            if r.get("p_value") is None:
                continue
            xs, ys = points.setdefault(r["detector"], ([], []))
            xs.append(e.at)
            ys.append(max(float(r["p_value"]), 1e-4))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.0))
    start = min(x[0] for x, _ in points.values())
    for det, (xs, ys) in points.items():
        ax.plot([(x - start).total_seconds() / 60 for x in xs], ys, marker="o", ms=3, label=f"{det} p-value")
    rule = controller.spec.policy.input_drift
    threshold = rule.max_p_value if rule is not None else 0.01
    ax.axhline(threshold or 0.01, color="red", ls="--", label=f"trigger threshold p ≤ {threshold}")
    ax.set_yscale("log")
    ax.set_xlabel("minutes since the loop started")
    ax.set_title("Drift checks")
    ax.legend(loc="lower left")
    img = _png(fig)
    plt.close(fig)
    return img


def write_demo_report(path: Path, summary: dict[str, Any], db_url: str, controller: Any) -> Path:
    quality_img, slices = _quality_timeline(db_url, controller.spec)
    drift_img = _drift_plot(controller)
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(str(s))} ({esc(str(v.get('metric')))})</td><td>{_f(v.get('champion'))}</td>"
        f"<td>{_f(v.get('challenger'))}</td><td>{_d(v.get('champion'), v.get('challenger'))}</td></tr>"
        for s, v in (summary.get("suites") or {}).items()
    )
    slice_rows = "".join(
        f"<tr><td>{esc(controller.spec.adapter)}@{esc(v)}</td>"
        + "".join(f"<td>{esc(k)}: {x:.2f}</td>" for k, x in sorted(d.items()))
        + "</tr>"
        for v, d in slices.items()
    )
    events = controller.store.events()
    event_rows = "".join(
        f"<tr><td>{e.at:%H:%M:%S}</td><td>{esc(e.kind)}</td><td>{esc(e.to_state or '')}</td>"
        f"<td>{esc(e.message[:300])}</td></tr>"
        for e in events
        if e.kind != "check"
    )
    canary_rows = "".join(
        f"<tr><td>{esc(str(r.get('step')))}</td><td>{_pct(r.get('weight'))}</td>"
        f"<td>{esc(str(r.get('n_champion')))} / {esc(str(r.get('n_challenger')))}</td>"
        f"<td>{_f(r.get('mean_champion'))}</td><td>{_f(r.get('mean_challenger'))}</td>"
        f"<td>{_signed(r.get('estimate'))} [{_signed(r.get('ci_low'))}, {_signed(r.get('ci_high'))}]</td>"
        f"<td>{_p(r.get('p_value'))}</td><td>{_f(r.get('e_value'))}</td>"
        f"<td>{esc(str(r.get('decision')))} ({esc(str(r.get('reason') or ''))})</td></tr>"
        for r in summary.get("canary_steps") or []
    )
    canary_table = (
        "<table><tr><th>step</th><th>challenger share</th><th>scored requests (champion / challenger)</th>"
        "<th>champion mean</th><th>challenger mean</th><th>Δ (always-valid CI, whole canary)</th>"
        f"<th>p-value</th><th>e-value</th><th>decision</th></tr>{canary_rows}</table>"
        if canary_rows
        else "<p>no canary steps recorded</p>"
    )
    t = summary.get("timings", {})
    outcome_class = "ok" if summary.get("outcome") == "promoted" else "bad"
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>tuneloop demo report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}
th{{background:#f4f4f4}}.ok{{color:#080}}.bad{{color:#b00}}</style></head><body>
<h1>tuneloop demo — Lumen Home support desk</h1>
<p>Outcome: <b class="{outcome_class}">{esc(str(summary.get("outcome")))}</b>.
Champion now <code>{esc(str(summary.get("champion_after")))}</code>.
Drift → outcome {t.get("drift_to_outcome_s", 0) / 60:.1f} min; whole demo {t.get("total_s", 0) / 60:.1f} min.
Traffic: {summary["traffic"]["ok"]} served, {summary["traffic"]["failed"]} failed.</p>
<h2>Before / after (gate evals, champion vs challenger)</h2>
<table><tr><th>suite (metric)</th><th>champion</th><th>challenger</th><th>Δ points</th></tr>{rows}</table>
<p>{esc(str(summary.get("gate_summary") or ""))}</p>
<h2>Canary steps</h2>
<p>Each step is decided by the always-valid sequential test (mSPRT) on the live score, guardrails and a
sample-ratio check (<code>monitoring/canary.py</code>); the interval and p-value cover all steps so far.</p>
{canary_table}
<h2>Live quality per served version</h2>
{f'<img src="{quality_img}" width="900">' if quality_img else "<p>no scored traffic</p>"}
<table><tr><th>version</th><th colspan="4">mean live score per slice</th></tr>{slice_rows}</table>
<h2>Drift</h2>
{f'<img src="{drift_img}" width="900">' if drift_img else "<p>no drift checks recorded</p>"}
<h2>Loop events</h2>
<table><tr><th>time</th><th>event</th><th>state</th><th>message</th></tr>{event_rows}</table>
<h2>Lineage</h2><p>{" ← ".join(esc(x[: len(x.split("@")[0]) + 13]) for x in summary.get("lineage", []))}</p>
</body></html>"""
    path.write_text(body, encoding="utf-8")
    return path


def _f(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, int | float) else "?"


def _pct(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, int | float) else "?"


def _signed(x: Any) -> str:
    return f"{x:+.3f}" if isinstance(x, int | float) else "?"


def _p(x: Any) -> str:
    if not isinstance(x, int | float):
        return "?"
    return "<0.001" if x < 0.001 else f"{x:.2g}"


def _d(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return f"{(b - a) * 100:+.1f}"
    return "?"
