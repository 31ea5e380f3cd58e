"""Run the recipe as a Ray task (GPU when the cluster has one, CPU otherwise) or in-process, with progress
events, cancellation and timeouts.

* Device choice never waits for a GPU: `num_gpus=1` only when `ray.cluster_resources()` reports one;
  otherwise the task is scheduled on CPUs (`num_gpus=0`) and a log line says so.
* The task is a Ray streaming generator: it yields progress events while training and finally the
  result (adapter bytes + metrics), so nothing needs a shared filesystem with the driver.
* `Execution.cancel()` force-cancels the task (the worker process is killed); a timeout does the same.
  The driver then returns a structured failure and the caller discards the temporary run folder.
* A task that does not start within `runtime.start_timeout_s` (cluster busy) is cancelled, not waited on.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainingConfig
from training.errors import ConfigError, TrainingCancelled, TrainingError, TrainingTimeout
from training.recipes.steps import RecipeJob, RecipeOutput

__all__ = [
    "DeviceChoice",
    "RemoteTaskError",
    "choose_device",
    "ensure_ray",
    "run_local",
    "run_ray",
    "stream_recipe",
]

log = logging.getLogger("training.dispatch")
Event = dict[str, Any]

WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class RemoteTaskError(TrainingError):
    """An unexpected error inside the training worker (the message carries its type and text)."""

    code = "internal_error"

    def __init__(
        self, message: str, code: str = "internal_error", remote_traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.remote_traceback = remote_traceback


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" | "cuda"
    num_gpus: int
    reason: str


def choose_device(config: TrainingConfig, *, use_ray: bool) -> DeviceChoice:
    """GPU iff the Ray cluster (or, without Ray, this machine) has one and the config allows it."""
    if config.runtime.device == "cpu":
        return DeviceChoice("cpu", 0, "runtime.device is 'cpu'")
    if use_ray:
        import ray

        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        summary = f"CPU={resources.get('CPU', 0):g}, GPU={gpus:g}"
    else:
        import torch

        gpus = float(torch.cuda.device_count()) if torch.cuda.is_available() else 0.0
        summary = f"local CUDA devices: {gpus:g}"
    if gpus >= 1:
        return DeviceChoice("cuda", 1, f"GPU available ({summary})")
    if config.runtime.device == "cuda":
        raise ConfigError(f"runtime.device is 'cuda' but there is no GPU ({summary})", key="runtime.device")
    return DeviceChoice("cpu", 0, f"no GPU ({summary}): training on CPU")


def ensure_ray(address: str | None = None) -> bool:
    """Connect this process to Ray if it is not yet: the cluster at `address` (or `$RAY_ADDRESS`: the
    service's, so training and its pre-warmed worker share it), else a new local runtime. Returns True when
    this call started a local runtime (the caller owns it and shuts it down). A named cluster that does not
    answer is an error, never a silent fall-back to training somewhere else."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {
        "log_to_driver": False,
        "configure_logging": False,
        "runtime_env": {"env_vars": WORKER_ENV},
    }
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is not None:
        use_local_token_auth()
        ray.init(address=target, **common)
        return False
    ray.init(include_dashboard=False, **common)
    return True


def use_local_token_auth() -> None:
    """Before joining a cluster started on this machine: Ray (2.60) starts local clusters with token
    authentication and keeps the token in `~/.ray/auth_token`, but a process that joins one only sends it
    when `RAY_AUTH_MODE=token` is set — Ray enables it by itself for `address="auto"` only, never for an
    explicit address (else: "Authentication token is missing or incorrect")."""
    if "RAY_AUTH_MODE" in os.environ or not (Path.home() / ".ray" / "auth_token").is_file():
        return
    try:  # what Ray itself does for `address="auto"`: set the mode and refresh its cached config
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # a Ray without token auth: nothing to enable
        pass


def _warm_imports() -> dict[str, Any]:
    """Import what a recipe run needs in this worker process; returns its pid and the seconds it took."""
    started = time.perf_counter()
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import training.recipes.lora_preference  # noqa: F401
    import training.recipes.lora_sft  # noqa: F401

    return {"pid": os.getpid(), "import_s": round(time.perf_counter() - started, 2)}


def prewarm(num_cpus: float = 1.0) -> Any:
    """Start a Ray worker for training and import the recipe's libraries in it (torch, transformers, peft,
    TRL), so that the next training task reuses a warm worker instead of paying for a process start and
    those imports. Ray reuses an idle worker of the same job and runtime environment for the next task,
    so this uses the environment `run_ray` uses. Returns the task's ObjectRef (its value: the worker's pid
    and import seconds), or None when Ray is not initialized in this process (nothing is started then)."""
    import ray

    if not ray.is_initialized():
        return None
    return (
        ray.remote(max_retries=0)(_warm_imports)
        .options(num_cpus=num_cpus, runtime_env={"env_vars": WORKER_ENV})
        .remote()
    )


def stream_recipe(job: RecipeJob) -> Iterator[Event]:
    """Run the recipe in a thread and yield its events, then one `result` or `error` event (the body of the
    Ray streaming task; also usable in-process)."""
    yield {"type": "worker_started", "pid": os.getpid(), "host": platform.node()}
    events: queue.Queue[Event] = queue.Queue()

    def target() -> None:
        from training.recipes import recipe_for

        run = recipe_for(job.config.style)
        try:
            events.put({"type": "_result", "output": run(job, events.put)})
        except BaseException as exc:  # reported to the driver as a structured error
            events.put(
                {
                    "type": "_error",
                    "code": getattr(exc, "code", "internal_error"),
                    "message": str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )

    threading.Thread(target=target, name="tuneloop-recipe", daemon=True).start()
    while True:
        item = events.get()
        if item["type"] == "_result":
            yield {"type": "result", "output": item["output"]}
            return
        if item["type"] == "_error":
            yield {"type": "error", **{k: v for k, v in item.items() if k != "type"}}
            return
        yield item


_remote: Any = None


def _remote_stream() -> Any:
    global _remote
    if _remote is None:
        import ray

        _remote = ray.remote(max_retries=0)(stream_recipe)
    return _remote


class CancelToken:
    """Set by `cancel()`; read by the dispatch loops."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def run_ray(
    job: RecipeJob,
    choice: DeviceChoice,
    emit: Callable[[Event], None],
    token: CancelToken,
) -> RecipeOutput:
    """Submit the recipe as a Ray task and drive it to a result; raises TrainingError subclasses."""
    import ray

    runtime = job.config.runtime
    total_cpus = float(ray.cluster_resources().get("CPU", 0))
    if runtime.num_cpus > total_cpus:
        raise ConfigError(
            f"requests {runtime.num_cpus:g} CPUs but the Ray cluster has {total_cpus:g}",
            key="runtime.num_cpus",
        )
    generator = (
        _remote_stream()
        .options(
            num_cpus=runtime.num_cpus,
            num_gpus=choice.num_gpus,
            num_returns="streaming",
            runtime_env={"env_vars": WORKER_ENV},
        )
        .remote(job)
    )
    submitted = time.monotonic()
    started: float | None = None

    def stop(error: TrainingError) -> TrainingError:
        ray.cancel(generator, force=True)
        return error

    while True:
        if token.cancelled:
            raise stop(TrainingCancelled("cancelled by the caller"))
        now = time.monotonic()
        if started is None and now - submitted > runtime.start_timeout_s:
            available = ray.available_resources()
            raise stop(
                TrainingTimeout(
                    f"the training task did not start within {runtime.start_timeout_s:g}s (requested "
                    f"num_cpus={runtime.num_cpus:g}, num_gpus={choice.num_gpus}; available CPU="
                    f"{available.get('CPU', 0):g}, GPU={available.get('GPU', 0):g})"
                )
            )
        if started is not None and now - started > runtime.timeout_s:
            raise stop(TrainingTimeout(f"the run exceeded runtime.timeout_s={runtime.timeout_s:g}s"))
        ready, _ = ray.wait([generator], timeout=0.5)
        if not ready:
            continue
        try:
            ref = next(generator)
        except StopIteration:
            raise RemoteTaskError("the training task ended without a result") from None
        try:
            event = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            raise TrainingCancelled("cancelled by the caller") from None
        except ray.exceptions.RayError as exc:
            raise RemoteTaskError(f"the training worker failed: {exc}") from None
        if event["type"] == "worker_started":
            started = time.monotonic()
            emit(
                {
                    "type": "log",
                    "message": f"worker started (pid {event['pid']} on {event['host']}), {choice.reason}",
                }
            )
            continue
        if event["type"] == "result":
            output: RecipeOutput = event["output"]
            return output
        if event["type"] == "error":
            raise RemoteTaskError(
                event["message"], code=event["code"], remote_traceback=event.get("traceback")
            )
        emit(event)


def run_local(job: RecipeJob, emit: Callable[[Event], None], token: CancelToken) -> RecipeOutput:
    """Run the recipe in this process (no Ray); cancel/timeout are checked between optimizer steps."""
    from training.recipes import recipe_for

    run = recipe_for(job.config.style)
    deadline = time.monotonic() + job.config.runtime.timeout_s

    def should_stop() -> str | None:
        if token.cancelled:
            return "cancelled"
        if time.monotonic() > deadline:
            return f"the run exceeded runtime.timeout_s={job.config.runtime.timeout_s:g}s"
        return None

    return run(job, emit, should_stop)
