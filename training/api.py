"""The public training API: `train(config) -> TrainingResult` and `submit(config) -> TrainingJob`.

One run, on the driver side:

    config (YAML path | dict | TrainingConfig) -> validate -> choose device (GPU iff the cluster has one)
    -> preflight (base model, target modules, parent adapter, data files; no weights) -> prepare data
    (tokenizer only) -> temporary run folder -> recipe as a Ray task (or in-process) with live events
    -> adapter verified + manifest written -> one rename into <runs_dir>/<run_id>/

Failures of any step return a `TrainingResult` with `status` failed / cancelled / timed_out and an error
code; the temporary folder is removed, so nothing partial is left to register.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.artifacts import (
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    RunPaths,
    begin_run,
    code_version,
    commit_run,
    discard_run,
    new_run_id,
    run_paths,
    verify_adapter,
    write_bytes,
    write_json,
    write_jsonl,
    write_yaml,
)
from training.config import TrainingConfig, apply_overrides, load_config, parse_config
from training.errors import TrainingError
from training.monitor import MetricsLog, ProgressView, plot_curves
from training.result import RunStatus, TrainingFailure, TrainingResult

if TYPE_CHECKING:
    from training.data.card import DataCard
    from training.data.pipeline import PreparedData
    from training.dispatch import DeviceChoice
    from training.preflight import ParentAdapter, Preflight
    from training.recipes.steps import RecipeJob, RecipeOutput

__all__ = ["TrainingJob", "submit", "train", "validate"]

log = logging.getLogger("training")
ConfigLike = TrainingConfig | dict[str, Any] | str | Path
EventHandler = Callable[[dict[str, Any]], None]
_STATUS_BY_CODE: dict[str, RunStatus] = {"cancelled": "cancelled", "timed_out": "timed_out"}


def _coerce(config: ConfigLike, overrides: dict[str, Any] | None) -> TrainingConfig:
    if isinstance(config, str | Path):
        return load_config(config, overrides)
    if overrides:
        import copy

        data = (
            config.model_dump(mode="json")
            if isinstance(config, TrainingConfig)
            else copy.deepcopy(dict(config))
        )
        return parse_config(apply_overrides(data, overrides))
    return parse_config(config)


class TrainingJob:
    """A submitted run. `wait()` returns the TrainingResult; `cancel()` stops it (no artifact is left)."""

    def __init__(
        self,
        config: ConfigLike,
        *,
        use_ray: bool,
        progress: bool,
        on_event: EventHandler | None,
        overrides: dict[str, Any] | None,
    ) -> None:
        from training.dispatch import CancelToken

        self._config_in = config
        self._overrides = overrides
        self._use_ray = use_ray
        self._progress = progress
        self._on_event = on_event
        self._token = CancelToken()
        self._result: TrainingResult | None = None
        self._log: list[str] = []
        self.run_id = ""
        self._thread = threading.Thread(target=self._drive, name="tuneloop-train", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop: the Ray task is force-cancelled (in-process: at the next step)."""
        self._token.cancel()

    def done(self) -> bool:
        return self._result is not None

    def wait(self, timeout: float | None = None) -> TrainingResult:
        """Block until the run ends (or `timeout` seconds pass: TimeoutError, the run keeps going)."""
        self._thread.join(timeout)
        if self._result is None:
            raise TimeoutError(f"training run {self.run_id or '(starting)'} still running after {timeout}s")
        return self._result

    # -- driver ------------------------------------------------------------------------------------

    def _note(self, message: str) -> None:
        log.info(message)
        self._log.append(message)

    def _drive(self) -> None:
        """The run's thread: every step in order; any failure becomes a structured result, nothing left."""
        state = _DriveState(time.monotonic(), datetime.now(UTC))
        try:
            self._result = self._run(state)
        except BaseException as exc:  # every failure becomes a structured result
            if state.metrics is not None:
                state.metrics.close()
            if state.paths is not None:
                discard_run(state.paths)
            self._result = self._failure(exc, state.name, state.device, time.monotonic() - state.started)
        finally:
            if state.owns_ray:
                import ray

                ray.shutdown()

    def _run(self, state: _DriveState) -> TrainingResult:
        """Validate, place, preflight, prepare data, train, then write and commit the artifact."""
        config = _coerce(self._config_in, self._overrides)
        state.name = config.name
        self.run_id = new_run_id(config.name)
        choice = self._choose_device(config, state)
        from training.preflight import preflight

        checked = preflight(config, choice.device)
        prepared, card = self._prepare_data(config)
        state.paths = paths = run_paths(config.output.runs_dir, config.name, self.run_id)
        _stage_inputs(paths, config, prepared, card)
        from training.recipes.steps import RecipeJob

        job = RecipeJob(
            config=config,
            train=prepared.train,
            validation=prepared.validation,
            dataset_hash=card.dataset_hash,
            checkpoint_dir=paths.checkpoint_dir,
            device=choice.device,
        )
        state.metrics = metrics = MetricsLog(paths.tmp_dir / "metrics.jsonl")
        output = self._train(job, choice, metrics, config.name)
        metrics.close()
        return self._commit(state, config, checked, card, paths, output, metrics)

    def _choose_device(self, config: TrainingConfig, state: _DriveState) -> DeviceChoice:
        """Start Ray when asked (remembering whether this run owns it) and pick the device."""
        if self._use_ray:
            from training.dispatch import ensure_ray

            state.owns_ray = ensure_ray()
        from training.dispatch import choose_device

        choice = choose_device(config, use_ray=self._use_ray)
        state.device = choice.device
        self._note(f"device: {choice.device} ({choice.reason})")
        return choice

    def _prepare_data(self, config: TrainingConfig) -> tuple[PreparedData, DataCard]:
        """Read, clean, template and tokenize the data (tokenizer only, no weights); note its card."""
        from training.data.pipeline import load_tokenizer, prepare_data

        prepared = prepare_data(config, load_tokenizer(config.base_model))  # type: ignore[arg-type]
        card = prepared.card
        assert card is not None
        self._note(
            f"data: {card.splits} rows, dataset {card.dataset_hash[:12]}, dropped {card.dropped or 'none'}"
        )
        return prepared, card

    def _train(self, job: RecipeJob, choice: DeviceChoice, metrics: MetricsLog, label: str) -> RecipeOutput:
        """Run the recipe (Ray task or in-process); each event goes to the log or metrics, view and caller."""
        with ProgressView(self._progress, label=label) as view:

            def emit(event: dict[str, Any]) -> None:
                if event["type"] == "log":
                    self._note(str(event["message"]))
                else:
                    metrics(event)
                view(event)
                if self._on_event is not None:
                    self._on_event(event)

            from training.dispatch import run_local, run_ray

            if self._use_ray:
                return run_ray(job, choice, emit, self._token)
            return run_local(job, emit, self._token)

    def _commit(
        self,
        state: _DriveState,
        config: TrainingConfig,
        checked: Preflight,
        card: DataCard,
        paths: RunPaths,
        output: RecipeOutput,
        metrics: MetricsLog,
    ) -> TrainingResult:
        """Artifact: adapter files, verification, plot and manifest; then one rename into the runs dir."""
        adapter_tmp = paths.tmp_dir / "adapter"
        for file_name, data in output.adapter_files.items():
            write_bytes(adapter_tmp / file_name, data)
        verify_adapter(adapter_tmp)
        summary = metrics.summary() | {
            "final_eval_loss": output.final_eval_loss,
            "stop_reason": output.stop_reason,
        }
        plot_curves(metrics.events, paths.tmp_dir / "curves.png", title=f"{config.name} ({self.run_id})")
        manifest = _manifest(
            self.run_id, config, checked, card, output, summary, adapter_tmp, state, use_ray=self._use_ray
        )
        write_json(adapter_tmp / MANIFEST_FILE, manifest)
        final = commit_run(paths)
        self._note(f"adapter written: {final / 'adapter'}")
        return TrainingResult(
            status="succeeded",
            run_id=self.run_id,
            name=state.name,
            run_dir=final,
            adapter_dir=final / "adapter",
            manifest=manifest,
            metrics=summary,
            device=state.device,
            duration_s=manifest["duration_s"],
            log=self._log,
        )

    def _failure(self, exc: BaseException, name: str, device: str | None, duration: float) -> TrainingResult:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            code, message, tb = "out_of_disk", f"out of disk space: {exc}", None
        elif isinstance(exc, TrainingError):
            code = exc.code
            message = exc.message
            tb = getattr(exc, "remote_traceback", None)
        else:
            code, message, tb = "internal_error", f"{type(exc).__name__}: {exc}", traceback.format_exc()
        status = _STATUS_BY_CODE.get(code, "failed")
        self._note(f"run {status}: [{code}] {message}")
        return TrainingResult(
            status=status,
            run_id=self.run_id or "-",
            name=name,
            error=TrainingFailure(code, message, tb),
            device=device,
            duration_s=round(duration, 2),
            log=self._log,
        )


@dataclass
class _DriveState:
    """What the failure path needs to know about a run in progress: what to close, discard and shut down."""

    started: float
    """`time.monotonic()` at the start (durations)."""
    started_at: datetime
    name: str = "unknown"
    device: str | None = None
    paths: RunPaths | None = None
    metrics: MetricsLog | None = None
    owns_ray: bool = False


def _stage_inputs(paths: RunPaths, config: TrainingConfig, prepared: PreparedData, card: DataCard) -> None:
    """Open the temporary run folder and write what the run was given: data card, config, held-out splits."""
    begin_run(paths)
    write_json(paths.tmp_dir / "data_card.json", card.to_dict())
    write_bytes(paths.tmp_dir / "data_card.md", card.to_markdown().encode())
    write_yaml(paths.tmp_dir / "config.yaml", config.to_plain())
    if config.output.write_splits:
        for split in ("validation", "test"):
            write_jsonl(
                paths.tmp_dir / "data" / f"{split}.jsonl",
                [e.to_record() for e in prepared.examples[split]],
            )


def _manifest(
    run_id: str,
    config: TrainingConfig,
    checked: Preflight,
    card: DataCard,
    output: RecipeOutput,
    summary: dict[str, Any],
    adapter_tmp: Path,
    state: _DriveState,
    *,
    use_ray: bool,
) -> dict[str, Any]:
    """The adapter's manifest: what was trained from what, with which data and code, and how it went."""
    from training.preflight import sha256_file

    finished_at = datetime.now(UTC)
    return {
        "schema": MANIFEST_SCHEMA,
        "run_id": run_id,
        "name": config.name,
        "style": config.style,
        "adapter": {
            "sha256": sha256_file(adapter_tmp / "adapter_model.safetensors"),
            "files": {f: len(d) for f, d in output.adapter_files.items()},
            "quantization": config.quantization,
            "lora": _lora_shape(output.adapter_files["adapter_config.json"]),
        },
        "base_model": {
            "id": config.base_id,
            "path": str(config.base_model),
            "fingerprint": checked.base_fingerprint,
        },
        "parent": _parent_record(config, checked.parent),
        "dataset": {"hash": card.dataset_hash, "card": card.to_dict()},
        "config": config.to_plain(),
        "metrics": summary,
        "code_version": code_version(),
        "started_at": state.started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": round(time.monotonic() - state.started, 2),
        "train_seconds": output.train_seconds,
        "train_cpu_seconds": output.extra.get("train_cpu_seconds"),
        "resumed_from": output.resumed_from,
        "hardware": output.hardware | {"ray": use_ray},
    }


def _parent_record(config: TrainingConfig, parent: ParentAdapter | None) -> dict[str, Any] | None:
    """The adapter this run started from (transfer: initialized from; continue: continued from)."""
    if parent is None:
        return None
    return {
        "relation": "initialized_from" if config.style == "transfer" else "continued_from",
        "path": str(parent.path),
        "sha256": parent.sha256,
        "name": (parent.manifest or {}).get("name"),
        "run_id": (parent.manifest or {}).get("run_id"),
    }


def _lora_shape(adapter_config: bytes) -> dict[str, Any]:
    import json

    cfg = json.loads(adapter_config)
    return {
        k: cfg.get(k)
        for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "base_model_name_or_path")
    }


def submit(
    config: ConfigLike,
    *,
    use_ray: bool = True,
    progress: bool = False,
    on_event: EventHandler | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainingJob:
    """Start a run in the background and return its handle (`wait()`, `cancel()`, `done()`)."""
    return TrainingJob(config, use_ray=use_ray, progress=progress, on_event=on_event, overrides=overrides)


def train(
    config: ConfigLike,
    *,
    use_ray: bool = True,
    progress: bool = False,
    on_event: EventHandler | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainingResult:
    """Run one training to completion and return its TrainingResult (never raises for a failed run;
    use `result.raise_for_status()` for exceptions). Ctrl-C cancels the run cleanly."""
    job = submit(config, use_ray=use_ray, progress=progress, on_event=on_event, overrides=overrides)
    try:
        return job.wait()
    except KeyboardInterrupt:
        job.cancel()
        return job.wait()


def validate(
    config: ConfigLike, *, device: str = "cpu", overrides: dict[str, Any] | None = None
) -> TrainingConfig:
    """Parse and preflight a config without training (raises ConfigError / DataError)."""
    from training.preflight import preflight

    parsed = _coerce(config, overrides)
    preflight(parsed, device)
    return parsed
