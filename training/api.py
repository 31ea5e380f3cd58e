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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.artifacts import (
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
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
        started = time.monotonic()
        started_at = datetime.now(UTC)
        name, device, paths = "unknown", None, None
        owns_ray = False
        metrics: MetricsLog | None = None
        try:
            config = _coerce(self._config_in, self._overrides)
            name = config.name
            self.run_id = new_run_id(config.name)
            if self._use_ray:
                from training.dispatch import ensure_ray

                owns_ray = ensure_ray()
            from training.dispatch import choose_device

            choice = choose_device(config, use_ray=self._use_ray)
            device = choice.device
            self._note(f"device: {choice.device} ({choice.reason})")

            from training.preflight import preflight

            checked = preflight(config, choice.device)

            from training.data.pipeline import load_tokenizer, prepare_data

            prepared = prepare_data(config, load_tokenizer(config.base_model))  # type: ignore[arg-type]
            card = prepared.card
            assert card is not None
            self._note(
                f"data: {card.splits} rows, dataset {card.dataset_hash[:12]}, "
                f"dropped {card.dropped or 'none'}"
            )

            paths = run_paths(config.output.runs_dir, config.name, self.run_id)
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

            from training.recipes.steps import RecipeJob

            job = RecipeJob(
                config=config,
                train=prepared.train,
                validation=prepared.validation,
                dataset_hash=card.dataset_hash,
                checkpoint_dir=paths.checkpoint_dir,
                device=choice.device,
            )
            metrics = MetricsLog(paths.tmp_dir / "metrics.jsonl")
            with ProgressView(self._progress, label=config.name) as view:

                def emit(event: dict[str, Any]) -> None:
                    if event["type"] == "log":
                        self._note(str(event["message"]))
                    else:
                        assert metrics is not None
                        metrics(event)
                    view(event)
                    if self._on_event is not None:
                        self._on_event(event)

                from training.dispatch import run_local, run_ray

                if self._use_ray:
                    output = run_ray(job, choice, emit, self._token)
                else:
                    output = run_local(job, emit, self._token)
            metrics.close()

            # Artifact: adapter files, verification, manifest, plot; then one rename.
            adapter_tmp = paths.tmp_dir / "adapter"
            for file_name, data in output.adapter_files.items():
                write_bytes(adapter_tmp / file_name, data)
            verify_adapter(adapter_tmp)
            from training.preflight import sha256_file

            summary = metrics.summary() | {
                "final_eval_loss": output.final_eval_loss,
                "stop_reason": output.stop_reason,
            }
            plot_curves(metrics.events, paths.tmp_dir / "curves.png", title=f"{config.name} ({self.run_id})")
            finished_at = datetime.now(UTC)
            parent = checked.parent
            manifest = {
                "schema": MANIFEST_SCHEMA,
                "run_id": self.run_id,
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
                "parent": None
                if parent is None
                else {
                    "relation": "initialized_from" if config.style == "transfer" else "continued_from",
                    "path": str(parent.path),
                    "sha256": parent.sha256,
                    "name": (parent.manifest or {}).get("name"),
                    "run_id": (parent.manifest or {}).get("run_id"),
                },
                "dataset": {"hash": card.dataset_hash, "card": card.to_dict()},
                "config": config.to_plain(),
                "metrics": summary,
                "code_version": code_version(),
                "started_at": started_at.isoformat(),
                "finished_at": finished_at.isoformat(),
                "duration_s": (duration := round(time.monotonic() - started, 2)),
                "train_seconds": output.train_seconds,
                "train_cpu_seconds": output.extra.get("train_cpu_seconds"),
                "resumed_from": output.resumed_from,
                "hardware": output.hardware | {"ray": self._use_ray},
            }
            write_json(adapter_tmp / MANIFEST_FILE, manifest)
            final = commit_run(paths)
            self._note(f"adapter written: {final / 'adapter'}")
            self._result = TrainingResult(
                status="succeeded",
                run_id=self.run_id,
                name=name,
                run_dir=final,
                adapter_dir=final / "adapter",
                manifest=manifest,
                metrics=summary,
                device=device,
                duration_s=duration,
                log=self._log,
            )
        except BaseException as exc:  # every failure becomes a structured result
            if metrics is not None:
                metrics.close()
            if paths is not None:
                discard_run(paths)
            self._result = self._failure(exc, name, device, time.monotonic() - started)
        finally:
            if owns_ray:
                import ray

                ray.shutdown()

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
