"""Real LoRA training of the default model on CPU: through a Ray task (loss goes down, peft loads the
adapter, lineage recorded), cancellation and timeout through Ray leave no artifact, sequential
continuation records its parent, and QLoRA (NF4) runs on CPU. Kept small: a handful of optimizer steps
on ~40 short support conversations."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from training.api import submit, train
from training.result import TrainingResult

pytestmark = pytest.mark.integration


def leftovers(runs: Path, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return sorted(p.name for p in runs.iterdir() if p.name not in keep and p.name != ".checkpoints")


@pytest.fixture(scope="module")
def trained(
    tiny_config: Callable[..., dict[str, Any]],
    ray_cluster: None,
    default_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainingResult:
    runs = tmp_path_factory.mktemp("runs")
    return train(tiny_config(default_model_path, runs, train__early_stopping_patience=3), use_ray=True)


def test_lora_through_ray_learns_and_peft_loads_it(
    trained: TrainingResult, default_model_path: Path, changes_output: Callable[[Path, Path], bool]
) -> None:
    # (the run also exercises evaluation every 2 steps, checkpoints and early stopping's best-model reload)
    assert trained.ok, trained.error
    assert trained.device == "cpu"
    assert any("no GPU" in line for line in trained.log)
    assert any("worker started" in line for line in trained.log)  # it ran in a Ray worker process
    m = trained.metrics
    assert m["steps"] == 4
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_loss_last"] < m["eval_loss_first"]
    assert m["stop_reason"] == "completed" and m["final_eval_loss"] == m["eval_loss_best"]
    assert m["tokens"] > 0 and m["tokens_per_s_mean"] > 0

    assert trained.adapter_dir is not None and trained.run_dir is not None
    files = sorted(p.name for p in trained.adapter_dir.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "tuneloop_manifest.json"]
    manifest = json.loads((trained.adapter_dir / "tuneloop_manifest.json").read_text())
    assert manifest["hardware"]["ray"] is True and manifest["hardware"]["device"] == "cpu"
    assert manifest["adapter"]["lora"]["r"] == 8 and manifest["base_model"]["id"] == default_model_path.name
    assert manifest["dataset"]["card"]["splits"]["train"] > 0
    steps = [json.loads(x) for x in (trained.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in steps if e["type"] == "step"] == [1, 2, 3, 4]
    assert (trained.run_dir / "curves.png").stat().st_size > 1000
    assert changes_output(default_model_path, trained.adapter_dir)  # the trained adapter changes the output
    assert (
        json.loads((trained.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        == default_model_path.name
    )


def test_cancel_through_ray_leaves_no_artifact(
    tiny_config: Callable[..., dict[str, Any]], ray_cluster: None, default_model_path: Path, tmp_path: Path
) -> None:
    first_step = threading.Event()
    job = submit(
        tiny_config(default_model_path, tmp_path, train__max_steps=500, name="it-cancel"),
        use_ray=True,
        on_event=lambda e: e["type"] == "step" and first_step.set(),
    )
    assert first_step.wait(600), "no training step within 10 minutes"
    job.cancel()
    result = job.wait(120)
    assert result.status == "cancelled" and result.error is not None and result.error.code == "cancelled"
    assert result.adapter_dir is None
    assert leftovers(tmp_path) == []


def test_timeout_through_ray(
    tiny_config: Callable[..., dict[str, Any]], ray_cluster: None, default_model_path: Path, tmp_path: Path
) -> None:
    result = train(
        tiny_config(default_model_path, tmp_path, name="it-timeout", runtime={"timeout_s": 3}), use_ray=True
    )
    assert result.status == "timed_out" and result.error is not None
    assert "timeout_s=3" in result.error.message
    assert leftovers(tmp_path) == []


def test_sequential_continues_the_parent(
    tiny_config: Callable[..., dict[str, Any]],
    trained: TrainingResult,
    default_model_path: Path,
    tmp_path: Path,
) -> None:
    assert trained.adapter_dir is not None and trained.manifest is not None
    result = train(
        tiny_config(
            default_model_path,
            tmp_path,
            name="it-continue",
            style="sequential",
            init_adapter=str(trained.adapter_dir),
            train__max_steps=2,
            train__eval_every_steps=None,
        ),
        use_ray=False,
    )
    assert result.ok, result.error
    assert result.manifest is not None
    parent = result.manifest["parent"]
    assert (
        parent["relation"] == "continued_from" and parent["sha256"] == trained.manifest["adapter"]["sha256"]
    )
    assert parent["name"] == "it-support"
    assert result.manifest["adapter"]["lora"]["r"] == 8  # the parent's shape is kept
    assert result.manifest["adapter"]["sha256"] != trained.manifest["adapter"]["sha256"]


def test_qlora_nf4_trains_on_cpu(
    tiny_config: Callable[..., dict[str, Any]], default_model_path: Path, tmp_path: Path
) -> None:
    result = train(
        tiny_config(
            default_model_path,
            tmp_path,
            name="it-qlora",
            quantization="nf4",
            train__max_steps=2,
            train__eval_every_steps=None,
        ),
        use_ray=False,
    )
    assert result.ok, result.error
    assert result.manifest is not None and result.manifest["adapter"]["quantization"] == "nf4"
    assert result.metrics["train_loss_first"] > 0


def test_resume_from_the_latest_checkpoint(
    tiny_config: Callable[..., dict[str, Any]], default_model_path: Path, tmp_path: Path
) -> None:
    first = train(
        tiny_config(
            default_model_path,
            tmp_path,
            name="it-resume",
            train__max_steps=2,
            train__save_every_steps=1,
            train__eval_every_steps=None,
            output={"runs_dir": str(tmp_path), "keep_checkpoints": True},
        ),
        use_ray=False,
    )
    assert first.ok, first.error
    checkpoints = tmp_path / ".checkpoints" / "it-resume"
    assert (checkpoints / "checkpoint-2").is_dir()
    resumed = train(
        tiny_config(
            default_model_path,
            tmp_path,
            name="it-resume",
            train__max_steps=3,
            train__resume=True,
            train__eval_every_steps=None,
        ),
        use_ray=False,
    )
    assert resumed.ok, resumed.error
    assert resumed.manifest is not None and str(resumed.manifest["resumed_from"]).endswith("checkpoint-2")
    assert resumed.metrics["steps"] == 3
    steps = [
        e
        for e in map(json.loads, (resumed.run_dir / "metrics.jsonl").read_text().splitlines())  # type: ignore[union-attr]
        if e["type"] == "step"
    ]
    assert [e["step"] for e in steps] == [3]  # only the remaining step was trained
    assert not checkpoints.exists()  # removed after success (keep_checkpoints is false)
