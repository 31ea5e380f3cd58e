"""The driver flow of `training.api.train` with the recipe replaced by a fake (no weights): a complete
run folder with manifest on success; on divergence, cancellation, NaN weights or a full disk a structured
failure and no run folder (not even a temporary one)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from training_fakes import adapter_files, fake_run  # type: ignore[import-not-found]

import training.api as api
import training.artifacts as artifacts
import training.dispatch as dispatch
from training.errors import TrainingDiverged, TrainingError


def leftovers(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.iterdir() if p.name != ".checkpoints") if runs.exists() else []


def test_success_writes_a_complete_run(
    make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "run_local", fake_run())
    events: list[dict[str, Any]] = []
    result = api.train(make_config(), use_ray=False, on_event=events.append)
    assert result.ok, result.error
    assert result.run_dir is not None and result.adapter_dir is not None
    assert sorted(p.name for p in result.adapter_dir.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tuneloop_manifest.json",
    ]
    for name in (
        "data_card.json",
        "data_card.md",
        "metrics.jsonl",
        "curves.png",
        "config.yaml",
        "data/validation.jsonl",
        "data/test.jsonl",
    ):
        assert (result.run_dir / name).is_file(), name
    manifest = json.loads((result.adapter_dir / "tuneloop_manifest.json").read_text())
    assert manifest["schema"] == "tuneloop.training_manifest/v1"
    assert (
        manifest["base_model"]["id"] == "SmolLM2-135M-Instruct"
        and len(manifest["base_model"]["fingerprint"]) == 64
    )
    assert manifest["dataset"]["hash"] == manifest["dataset"]["card"]["dataset_hash"]
    assert manifest["metrics"]["train_loss_first"] == 2.0 and manifest["metrics"]["train_loss_last"] == 1.5
    assert manifest["metrics"]["eval_loss_best"] == 1.7
    assert manifest["parent"] is None and manifest["config"]["name"] == "unit"
    assert {"git_sha", "packages"} <= set(manifest["code_version"]) and manifest["duration_s"] >= 0
    weights = (result.adapter_dir / "adapter_model.safetensors").read_bytes()
    assert manifest["adapter"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert [e["type"] for e in events] == ["start", "step", "step", "eval"]
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[1])["loss"] == 2.0
    assert leftovers(result.run_dir.parent) == [result.run_id]


@pytest.mark.parametrize(
    ("runner", "code", "status"),
    [
        (fake_run(error=TrainingDiverged("training loss became nan")), "diverged", "failed"),
        (fake_run(files=adapter_files(nan=True)), "artifact_error", "failed"),
        (fake_run(error=RuntimeError("boom")), "internal_error", "failed"),
    ],
)
def test_failures_leave_nothing(
    make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Any, code: str, status: str
) -> None:
    monkeypatch.setattr(dispatch, "run_local", runner)
    result = api.train(make_config(), use_ray=False)
    assert result.status == status and result.error is not None and result.error.code == code
    assert result.adapter_dir is None
    assert leftovers(tmp_path / "runs") == []
    with pytest.raises(TrainingError):
        result.raise_for_status()


def test_out_of_disk_while_saving(make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "run_local", fake_run())
    real = artifacts.write_bytes

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == "adapter_model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(artifacts, "write_bytes", full_disk)
    monkeypatch.setattr(api, "write_bytes", full_disk)
    result = api.train(make_config(), use_ray=False)
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "out_of_disk" and "No space left" in result.error.message
    assert leftovers(tmp_path / "runs") == []


def test_cancel_in_process(make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "run_local", fake_run(wait_for_stop=True))
    seen_eval = threading.Event()
    job = api.submit(make_config(), use_ray=False, on_event=lambda e: e["type"] == "eval" and seen_eval.set())
    assert seen_eval.wait(60)
    job.cancel()
    result = job.wait(60)
    assert result.status == "cancelled" and result.error is not None and result.error.code == "cancelled"
    assert leftovers(tmp_path / "runs") == []


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"lora": {"r": 0}}, "invalid_config", "lora.r"),
        ({"base_model": "/does/not/exist"}, "invalid_config", "base_model"),
        ({"lora": {"target_modules": ["nope_proj"]}}, "invalid_config", "nope_proj"),
    ],
)
def test_bad_config_returns_failure_without_training(
    base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, code: str, needle: str
) -> None:
    monkeypatch.setattr(dispatch, "run_local", lambda *a: pytest.fail("must not train"))
    raw = {
        "name": "bad",
        "base_model": str(base_model),
        "output": {"runs_dir": str(tmp_path / "runs")},
        "data": {
            "sources": [{"path": str(Path(__file__).parents[2] / "fixtures/training/support_tiny.jsonl")}]
        },
    }
    raw.update(change)
    result = api.train(raw, use_ray=False)
    assert result.status == "failed" and result.error is not None
    assert result.error.code == code and needle in result.error.message
    assert leftovers(tmp_path / "runs") == []


def test_zero_rows_after_cleaning_is_invalid_data(
    make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "run_local", lambda *a: pytest.fail("must not train"))
    path = tmp_path / "dirty.jsonl"
    path.write_text(
        io.StringIO('{"text": "   "}\n{"text": "\\u00c3\\u00a9t\\u00c3\\u00a9"}\n').getvalue(),
        encoding="utf-8",
    )
    result = api.train(make_config([{"path": str(path)}]), use_ray=False)
    assert result.error is not None and result.error.code == "invalid_data"
    assert "no training rows left after cleaning" in result.error.message
