"""Matplotlib figures for eval and A/B reports, returned as PNG bytes (no pyplot global state, Agg only).

- `metric_bars`: each metric's value per run with its confidence interval;
- `delta_forest`: challenger - champion per scope/slice with CIs and the gate's bound;
- `distributions`: overlaid histograms of per-example (or per-request) values per run/arm;
- `cumulative_effect`: the A/B effect estimate over time with its always-valid confidence sequence.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
GOOD, BAD, NEUTRAL = "#2E7D32", "#C62828", "#555555"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _style(ax: object) -> None:
    ax.grid(axis="y", color="#E5E5E5", linewidth=0.8)  # type: ignore[attr-defined]
    ax.set_axisbelow(True)  # type: ignore[attr-defined]
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class BarValue:
    """One bar: a run's value of a metric with its interval."""

    label: str
    value: float
    low: float
    high: float


def metric_bars(
    panels: Sequence[tuple[str, Mapping[str, Sequence[BarValue]]]], *, width_per_panel: float = 5.5
) -> bytes:
    """One panel per (title, {metric: [bars per run]}); bars grouped by metric, one colour per run."""
    n = max(1, len(panels))
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width_per_panel * cols, 3.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    labels: list[str] = []
    for _, metrics in panels:
        for bars in metrics.values():
            for bar in bars:
                if bar.label not in labels:
                    labels.append(bar.label)
    colour = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    for ax, (title, metrics) in zip(axes, panels, strict=False):
        names = list(metrics)
        group = max(1, len(labels))
        width = 0.8 / group
        for j, label in enumerate(labels):
            xs: list[float] = []
            ys: list[float] = []
            errs: list[list[float]] = [[], []]
            for i, name in enumerate(names):
                found = next((b for b in metrics[name] if b.label == label), None)
                if found is None or not np.isfinite(found.value):
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(found.value)
                errs[0].append(max(found.value - found.low, 0) if np.isfinite(found.low) else 0)
                errs[1].append(max(found.high - found.value, 0) if np.isfinite(found.high) else 0)
            ax.bar(
                xs,
                ys,
                width=width * 0.92,
                color=colour[label],
                label=label,
                yerr=errs,
                capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "#333333"},
            )
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(
                    f"{y:.2f}" if abs(y) < 10 else f"{y:.1f}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=7,
                    color="#333333",
                )
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title, fontsize=11, loc="left")
        _style(ax)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles, legend_labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            legend_labels,
            loc="upper center",
            ncol=min(4, len(legend_labels)),
            frameon=False,
            bbox_to_anchor=(0.5, 1.06),
        )
    fig.tight_layout()
    return _png(fig)


@dataclass(frozen=True)
class DeltaRow:
    """One line of a forest plot."""

    label: str
    delta: float
    low: float
    high: float
    bound: float | None
    passed: bool | None


def delta_forest(rows: Sequence[DeltaRow], *, title: str, xlabel: str) -> bytes:
    """Horizontal CIs of deltas: green when the check passed, red when it failed; dashed at 0 and bounds."""
    fig = Figure(figsize=(8.5, 0.45 * len(rows) + 1.6))
    ax = fig.subplots()
    ys = np.arange(len(rows))[::-1]
    for y, row in zip(ys, rows, strict=True):
        colour = NEUTRAL if row.passed is None else (GOOD if row.passed else BAD)
        if np.isfinite(row.low) and np.isfinite(row.high):
            ax.hlines(y, row.low, row.high, color=colour, linewidth=2.2)
        ax.plot([row.delta], [y], "o", color=colour, markersize=6)
        ax.annotate(
            f"{row.delta:+.3f}",
            (row.delta, y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=7,
            color=colour,
        )
        if row.bound is not None and np.isfinite(row.bound):
            ax.plot(
                [row.bound, row.bound], [y - 0.35, y + 0.35], color="#999999", linestyle="--", linewidth=1
            )
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_yticks(ys, [r.label for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(axis="x", color="#E5E5E5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _png(fig)


def distributions(
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    bins: int = 20,
    log_x: bool = False,
    unit_range: bool | None = None,
    ylabel: str = "share",
) -> bytes:
    """Histograms of each label's values as shares (bars side by side), each label's mean marked.

    Values within [0, 1] (scores) get ten fixed bins over [0, 1], so 0/1 metrics read as two clear groups.
    """
    fig = Figure(figsize=(8.5, 3.4))
    ax = fig.subplots()
    finite = {
        k: np.asarray([v for v in vals if v is not None and np.isfinite(v)], dtype=float)
        for k, vals in series.items()
    }
    finite = {k: v for k, v in finite.items() if v.size}
    everything = np.concatenate(list(finite.values()) or [np.zeros(1)])
    low, high = float(everything.min()), float(everything.max())
    if unit_range is None:
        unit_range = low >= 0.0 and high <= 1.0
    if unit_range:
        edges = np.linspace(0.0, 1.0, 11)
    else:
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = (
            np.geomspace(max(low, 1e-3), high, bins + 1)
            if log_x and low > 0
            else np.linspace(low, high, bins + 1)
        )
    labels = list(finite)
    colours = [PALETTE[list(series).index(k) % len(PALETTE)] for k in labels]
    if labels:
        ax.hist(
            [finite[k] for k in labels],
            bins=list(edges),
            weights=[np.full(finite[k].size, 1.0 / finite[k].size) for k in labels],
            color=colours,
            label=[f"{k} (n={finite[k].size}, mean {finite[k].mean():.3g})" for k in labels],
            histtype="bar",
            rwidth=0.9,
            alpha=0.85,
        )
        for k, colour in zip(labels, colours, strict=True):
            ax.axvline(finite[k].mean(), color=colour, linestyle="--", linewidth=1.2)
    if log_x and low > 0 and not unit_range:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11, loc="left")
    ax.legend(frameon=False, fontsize=8)
    _style(ax)
    fig.tight_layout()
    return _png(fig)


@dataclass(frozen=True)
class EffectPath:
    """A treatment arm's cumulative effect over time."""

    label: str
    n_total: Sequence[int]
    estimate: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]
    p_value: Sequence[float]


def cumulative_effect(paths: Sequence[EffectPath], *, outcome: str, alpha: float) -> bytes:
    """Effect estimate after each request with its always-valid confidence sequence; marks p <= alpha."""
    fig = Figure(figsize=(8.5, 3.8))
    ax = fig.subplots()
    for i, path in enumerate(paths):
        colour = PALETTE[(i + 1) % len(PALETTE)]
        x = np.asarray(path.n_total, dtype=float)
        est = np.asarray(path.estimate, dtype=float)
        low = np.asarray(path.low, dtype=float)
        high = np.asarray(path.high, dtype=float)
        ok = np.isfinite(est) & np.isfinite(low) & np.isfinite(high)
        ax.fill_between(
            x[ok],
            low[ok],
            high[ok],
            color=colour,
            alpha=0.18,
            label=f"{path.label}: {int((1 - alpha) * 100)}% always-valid bound",
        )
        ax.plot(x[ok], est[ok], color=colour, linewidth=1.8, label=f"{path.label}: effect estimate")
        p = np.asarray(path.p_value, dtype=float)
        hits = np.flatnonzero(ok & (p <= alpha))
        if hits.size:
            first = hits[0]
            ax.axvline(x[first], color=colour, linestyle=":", linewidth=1.2)
            ax.annotate(
                f"p<={alpha:g} at n={int(x[first])}",
                (x[first], est[first]),
                textcoords="offset points",
                xytext=(6, 10),
                fontsize=8,
                color=colour,
            )
    ax.axhline(0, color="#333333", linewidth=0.8)
    ax.set_xlabel("requests in the experiment (both arms)")
    ax.set_ylabel(f"treatment - control: {outcome}")
    ax.set_title(f"Cumulative effect on {outcome} with its sequential (mSPRT) bound", fontsize=11, loc="left")
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    _style(ax)
    fig.tight_layout()
    return _png(fig)
