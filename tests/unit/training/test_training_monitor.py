"""Monitoring: divergence rules, the metrics callback with fake trainer state, the JSONL log summary and
the curves plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from training.monitor import MetricsCallback, MetricsLog, check_divergence, plot_curves


def test_divergence_rules() -> None:
    assert check_divergence(2.0, 1.0, 2.0, 4.0) is None
    assert "nan" in (check_divergence(math.nan, 1.0, 2.0, 4.0) or "")
    assert "inf" in (check_divergence(math.inf, 1.0, 2.0, 4.0) or "")
    assert "gradient norm" in (check_divergence(2.0, math.nan, 2.0, 4.0) or "")
    assert "exploded" in (check_divergence(9.0, 1.0, 2.0, 4.0) or "")
    assert check_divergence(9.0, 1.0, 2.0, None) is None
    # a near-zero first loss (an adapter continued on data it knows) does not make new data an explosion
    assert check_divergence(1.2, 1.0, 0.011, 4.0) is None
    assert "exploded" in (check_divergence(4.5, 1.0, 0.011, 4.0) or "")


def run_callback(
    losses: list[float], stop: str | None = None
) -> tuple[MetricsCallback, list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    cb = MetricsCallback(events.append, lambda: stop, divergence_factor=4.0)
    cb.token_count = lambda: 100 * len(events)
    args = SimpleNamespace(num_train_epochs=1.0)
    state = SimpleNamespace(max_steps=len(losses), global_step=0, epoch=0.0)
    control = SimpleNamespace(should_training_stop=False)
    cb.on_train_begin(args, state, control)
    for i, loss in enumerate(losses, start=1):
        state.global_step, state.epoch = i, i / len(losses)
        cb.on_step_end(args, state, control)
        cb.on_log(args, state, control, logs={"loss": loss, "grad_norm": 0.5, "learning_rate": 1e-4})
        if control.should_training_stop:
            break
    cb.on_log(args, state, control, logs={"eval_loss": 1.25})
    return cb, events, control


def test_callback_emits_step_and_eval_events() -> None:
    cb, events, control = run_callback([2.0, 1.8, 1.6])
    assert [e["type"] for e in events] == ["start", "step", "step", "step", "eval"]
    step = events[1]
    assert step["loss"] == 2.0 and step["lr"] == 1e-4 and step["grad_norm"] == 0.5 and step["tokens"] > 0
    assert step["rss_mb"] > 0 and step["tokens_per_s"] is not None
    assert events[-1]["eval_loss"] == 1.25 and cb.last_eval_step == 3
    assert not control.should_training_stop and cb.diverged is None


def test_callback_stops_on_nan_and_explosion() -> None:
    cb, events, control = run_callback([2.0, math.nan, 1.0])
    assert control.should_training_stop and "nan" in (cb.diverged or "")
    assert sum(e["type"] == "step" for e in events) == 2
    cb, _, control = run_callback([1.0, 1.2, 50.0, 1.0])
    assert control.should_training_stop and "exploded" in (cb.diverged or "")


def test_callback_stops_when_asked() -> None:
    cb, _, control = run_callback([2.0, 1.9], stop="cancelled")
    assert control.should_training_stop and cb.stopped == "cancelled"


def test_metrics_log_summary_and_plot(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    _, events, _ = run_callback([2.0, 1.5, 1.2, 1.1])
    for event in events:
        log(event)
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(events)
    summary = log.summary()
    assert summary["train_loss_first"] == 2.0 and summary["train_loss_last"] == 1.1 and summary["steps"] == 4
    assert summary["eval_loss_best"] == 1.25
    assert plot_curves(log.events, tmp_path / "curves.png", title="t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_curves([], tmp_path / "none.png")
