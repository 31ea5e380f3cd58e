"""A training task killed from outside (SIGKILL of the Ray worker process mid-training, as the OOM killer
or a node loss would do) - not the polite `cancel()` path, which tests/integration/training covers.

Proves: the driver notices (no hang), returns a structured failure (`status == "failed"`, a stable
error code, a message naming the worker's death), and leaves no partial artifact: no adapter folder, no
run folder, no temp folder in `runs_dir`.

Real Ray (a local 2-CPU cluster) and a real LoRA training of the default model on CPU, so this runs with
the integration tests (marked `integration`); it takes about a minute.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(900)]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "training" / "support_tiny.jsonl"


def test_killed_training_worker_leaves_no_artifact(ray_cluster: None, tmp_path: Path) -> None:
    from serving.models import prepare_default_model
    from training.api import submit

    base = prepare_default_model()
    config: dict[str, Any] = {
        "name": "rel-killed",
        "base_model": str(base),
        "data": {"sources": [{"path": str(FIXTURE)}], "max_rows": 40, "max_seq_length": 128},
        "lora": {"r": 8},
        "train": {"max_steps": 500, "batch_size": 2, "learning_rate": 2e-3, "warmup_ratio": 0.0},
        "runtime": {"num_cpus": 1, "timeout_s": 900},
        "output": {"runs_dir": str(tmp_path)},
    }
    worker: dict[str, int] = {}
    first_step = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "log" and (m := re.search(r"worker started \(pid (\d+)", str(event["message"]))):
            worker["pid"] = int(m.group(1))
        if event["type"] == "step":
            first_step.set()

    job = submit(config, use_ray=True, on_event=on_event)
    assert first_step.wait(600), "no training step within 10 minutes"
    os.kill(worker["pid"], signal.SIGKILL)
    result = job.wait(180)

    assert result.status == "failed" and result.error is not None, result
    assert result.error.code == "internal_error"
    assert "worker" in result.error.message or "task" in result.error.message  # names what died
    assert result.adapter_dir is None and result.run_dir is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".checkpoints") == []
