"""Monitoring during training: per-step metrics, divergence detection, the metrics JSONL, the curves plot and
the rich progress bar.

The worker side is `MetricsCallback` (a transformers `TrainerCallback`): on every log it emits a plain
dict event - loss, learning rate, grad norm, tokens seen, tokens/s, RSS / GPU memory - and on eval the
validation loss; NaN/inf or an exploding loss sets `stop_reason` and stops the trainer. Events are plain
dicts so they cross the Ray boundary unchanged. The driver side turns them into `metrics.jsonl`
(`MetricsLog`), a live `ProgressView`, and `curves.png` (`plot_curves`).

Event types: `start` {max_steps, epochs, device}, `step` {step, epoch, loss, lr, grad_norm, tokens,
tokens_per_s, rss_mb, gpu_mem_mb, elapsed_s}, `eval` {step, epoch, eval_loss}, `end` {reason}. Preference
runs (dpo / kto) add TRL's reward metrics to `step` and `eval` events (`reward_margin`: mean chosen minus
rejected implicit reward, `reward_accuracy`: share of pairs ranked right, `kl`: kto's KL estimate; eval
ones prefixed `eval_`), which the summary and the plot show too.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from transformers import TrainerCallback

__all__ = ["MetricsCallback", "MetricsLog", "ProgressView", "check_divergence", "peak_rss_mb", "plot_curves"]

Event = dict[str, Any]
PREFERENCE_METRICS = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy", "kl": "kl"}
"""TRL's preference metrics and their event names."""


def _preference_metrics(logs: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {
        prefix + name: float(logs[prefix + key])
        for key, name in PREFERENCE_METRICS.items()
        if logs.get(prefix + key) is not None
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except Exception:  # psutil missing or restricted: fall back to the peak
        return peak_rss_mb()


def _gpu_mem_mb() -> float | None:
    import torch

    if torch.cuda.is_available():
        return float(torch.cuda.max_memory_allocated()) / 2**20
    return None


DIVERGENCE_FLOOR = 1.0
"""Smallest loss the explosion check compares against (nats per token)."""


def check_divergence(
    loss: float | None, grad_norm: float | None, first_loss: float | None, factor: float | None
) -> str | None:
    """Why training must stop, or None: NaN/inf loss or grad norm always; loss > factor x the reference,
    where the reference is the first logged loss but at least `DIVERGENCE_FLOOR` (continuing an adapter
    on data it already knows starts near zero, and the first batch of *new* data would otherwise look
    like an explosion: seen in the demo's retraining, first loss 0.011 then 1.2 on a refunds batch)."""
    if loss is not None and not math.isfinite(loss):
        return f"training loss became {loss}"
    if grad_norm is not None and not math.isfinite(grad_norm):
        return f"gradient norm became {grad_norm}"
    if factor is not None and loss is not None and first_loss is not None:
        reference = max(first_loss, DIVERGENCE_FLOOR)
        if loss > factor * reference:
            return (
                f"training loss exploded: {loss:.4g} > {factor:g} x {reference:.4g} "
                f"(the first loss {first_loss:.4g}, at least {DIVERGENCE_FLOOR:g})"
            )
    return None


class MetricsCallback(TrainerCallback):
    """Emits step/eval events and stops the trainer on divergence or when `should_stop()` gives a reason."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        should_stop: Callable[[], str | None] = lambda: None,
        divergence_factor: float | None = 4.0,
        device: str = "cpu",
    ) -> None:
        self.emit = emit
        self.should_stop = should_stop
        self.divergence_factor = divergence_factor
        self.device = device
        self.first_loss: float | None = None
        self.diverged: str | None = None
        self.stopped: str | None = None
        self.train_losses: list[float] = []
        self.eval_losses: list[float] = []
        self.last_eval_step: int | None = None
        self.token_count: Callable[[], int] | None = None
        """Useful (non-padding) tokens trained so far; set by the recipe (falls back to TRL's count)."""
        self._t0 = time.perf_counter()
        self._last_t = self._t0
        self._last_tokens = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = self._last_t = time.perf_counter()
        self.emit(
            {
                "type": "start",
                "max_steps": int(state.max_steps),
                "epochs": float(args.num_train_epochs),
                "device": self.device,
                "start_step": int(state.global_step),
            }
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        reason = self.should_stop()
        if reason:
            self.stopped = reason
            control.should_training_stop = True

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        now = time.perf_counter()
        if "eval_loss" in logs:
            self.eval_losses.append(float(logs["eval_loss"]))
            self.last_eval_step = int(state.global_step)
            self.emit(
                {
                    "type": "eval",
                    "step": int(state.global_step),
                    "epoch": float(state.epoch or 0.0),
                    "eval_loss": float(logs["eval_loss"]),
                    "elapsed_s": round(now - self._t0, 3),
                    **_preference_metrics(logs, "eval_"),
                }
            )
            return
        if "loss" not in logs:
            return
        loss = float(logs["loss"])
        grad_norm = float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None
        tokens = float(self.token_count() if self.token_count is not None else logs.get("num_tokens", 0.0))
        dt = max(now - self._last_t, 1e-9)
        tokens_per_s = (tokens - self._last_tokens) / dt if tokens else None
        self._last_t, self._last_tokens = now, tokens
        if self.first_loss is None and math.isfinite(loss):
            self.first_loss = loss
        self.train_losses.append(loss)
        self.emit(
            {
                "type": "step",
                "step": int(state.global_step),
                "epoch": round(float(state.epoch or 0.0), 4),
                "loss": loss,
                "lr": float(logs.get("learning_rate", 0.0)),
                "grad_norm": grad_norm,
                "tokens": int(tokens),
                "tokens_per_s": round(tokens_per_s, 2) if tokens_per_s is not None else None,
                "mean_token_accuracy": logs.get("mean_token_accuracy"),
                "rss_mb": round(_rss_mb(), 1),
                "gpu_mem_mb": _gpu_mem_mb(),
                "elapsed_s": round(now - self._t0, 3),
                **_preference_metrics(logs),
            }
        )
        reason = check_divergence(loss, grad_norm, self.first_loss, self.divergence_factor)
        if reason:
            self.diverged = reason
            control.should_training_stop = True


class MetricsLog:
    """Appends events to `metrics.jsonl` (one JSON object per line) and keeps them for the plot/summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[Event] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._fh.write(json.dumps(event, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def summary(self) -> dict[str, Any]:
        steps = [e for e in self.events if e["type"] == "step"]
        evals = [e for e in self.events if e["type"] == "eval"]
        rates = [e["tokens_per_s"] for e in steps[1:] if e.get("tokens_per_s")]
        out: dict[str, Any] = {"steps": steps[-1]["step"] if steps else 0}
        if steps:
            out |= {
                "train_loss_first": steps[0]["loss"],
                "train_loss_last": steps[-1]["loss"],
                "train_loss_min": min(e["loss"] for e in steps),
                "epochs": steps[-1]["epoch"],
                "tokens": steps[-1]["tokens"],
                "tokens_per_s_mean": round(sum(rates) / len(rates), 2) if rates else None,
                "peak_rss_mb": max(e["rss_mb"] for e in steps),
            }
            gpu = [e["gpu_mem_mb"] for e in steps if e.get("gpu_mem_mb")]
            if gpu:
                out["peak_gpu_mem_mb"] = max(gpu)
            for name in PREFERENCE_METRICS.values():
                values = [e[name] for e in steps if e.get(name) is not None]
                if values:
                    out[f"{name}_first"], out[f"{name}_last"] = values[0], values[-1]
        if evals:
            out |= {
                "eval_loss_first": evals[0]["eval_loss"],
                "eval_loss_last": evals[-1]["eval_loss"],
                "eval_loss_best": min(e["eval_loss"] for e in evals),
            }
            for name in PREFERENCE_METRICS.values():
                values = [e[f"eval_{name}"] for e in evals if e.get(f"eval_{name}") is not None]
                if values:
                    out[f"eval_{name}_last"] = values[-1]
        return out


def plot_curves(events: list[Event], path: Path, title: str = "") -> bool:
    """Write a PNG with loss / validation loss, learning rate, grad norm and tokens/s per step."""
    steps = [e for e in events if e["type"] == "step"]
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [e for e in events if e["type"] == "eval"]
    preference = any(e.get("reward_margin") is not None for e in steps)
    fig, axes = plt.subplots(3 if preference else 2, 2, figsize=(10, 10.5 if preference else 7))
    x = [e["step"] for e in steps]
    ax = axes[0][0]
    ax.plot(x, [e["loss"] for e in steps], label="train loss")
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss")
    ax.set_title("loss")
    ax.legend()
    axes[0][1].plot(x, [e["lr"] for e in steps])
    axes[0][1].set_title("learning rate")
    axes[1][0].plot(x, [e["grad_norm"] if e["grad_norm"] is not None else math.nan for e in steps])
    axes[1][0].set_title("grad norm")
    axes[1][1].plot(x, [e["tokens_per_s"] if e["tokens_per_s"] is not None else math.nan for e in steps])
    axes[1][1].set_title("tokens / s")
    if preference:
        for ax, name, label in (
            (axes[2][0], "reward_margin", "reward margin (chosen - rejected)"),
            (axes[2][1], "reward_accuracy", "reward accuracy"),
        ):
            ax.plot(x, [e.get(name, math.nan) for e in steps], label="train")
            points = [(e["step"], e[f"eval_{name}"]) for e in evals if e.get(f"eval_{name}") is not None]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", label="validation")
                ax.legend()
            ax.set_title(label)
    for row in axes:
        for a in row:
            a.set_xlabel("step")
            a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


class ProgressView:
    """A rich progress bar fed with training events (on stderr); a no-op when disabled."""

    def __init__(self, enabled: bool, label: str = "training") -> None:
        self.enabled = enabled
        self.label = label
        self._progress: Any = None
        self._task: Any = None
        self._val = "-"

    def __enter__(self) -> ProgressView:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, info="preparing")
        return self

    def __call__(self, event: Event) -> None:
        if self._progress is None:
            return
        kind = event["type"]
        if kind == "start":
            self._progress.update(
                self._task,
                total=event["max_steps"],
                completed=event.get("start_step", 0),
                info=f"on {event['device']}",
            )
        elif kind == "step":
            tps = f"{event['tokens_per_s']:.0f} tok/s" if event.get("tokens_per_s") else ""
            self._progress.update(
                self._task, completed=event["step"], info=f"loss {event['loss']:.4f}  val {self._val}  {tps}"
            )
        elif kind == "eval":
            self._val = f"{event['eval_loss']:.4f}"
        elif kind == "end":
            self._progress.update(self._task, info=str(event.get("reason", "done")))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
