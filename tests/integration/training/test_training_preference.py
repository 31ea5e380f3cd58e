"""Real preference tuning of the default model on CPU, kept tiny (3 optimizer steps on ~25 short records
from a file source): DPO from the base model through a Ray task, then KTO starting from the DPO adapter
(the way the loop passes the champion as init_adapter). Each run must leave a loadable adapter folder with
only the trained adapter (not TRL's frozen reference copy), a manifest with lineage, the preference
metrics and a loss curve."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from training.api import train
from training.result import TrainingResult

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "training"
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "tuneloop_manifest.json"]


def preference_config(
    tiny_config: Callable[..., dict[str, Any]],
    base: Path,
    runs: Path,
    style: str,
    fixture: str,
    **changes: Any,
) -> dict[str, Any]:
    return tiny_config(
        base,
        runs,
        name=f"it-{style}",
        style=style,
        data={
            "sources": [{"path": str(FIXTURES / fixture)}],
            "max_seq_length": 128,
            "split": {"validation": 0.3, "test": 0},
        },
        train__max_steps=3,
        train__eval_every_steps=3,
        train__learning_rate=5e-4,
        **changes,
    )


@pytest.fixture(scope="module")
def dpo_run(
    tiny_config: Callable[..., dict[str, Any]],
    ray_cluster: None,
    default_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainingResult:
    runs = tmp_path_factory.mktemp("runs")
    config = preference_config(
        tiny_config, default_model_path, runs, "dpo", "preference_tiny.jsonl", preference={"beta": 0.1}
    )
    return train(config, use_ray=True)


def check_artifact(result: TrainingResult, style: str) -> dict[str, Any]:
    assert result.ok, result.error
    assert result.adapter_dir is not None and result.run_dir is not None and result.manifest is not None
    assert sorted(p.name for p in result.adapter_dir.iterdir()) == ADAPTER_FILES  # no "ref/" copy
    manifest = json.loads((result.adapter_dir / "tuneloop_manifest.json").read_text())
    assert manifest["style"] == style and manifest["config"]["train"]["batching"] == "padded"
    card = manifest["dataset"]["card"]
    assert card["preference"]["style"] == style and card["splits"]["train"] > 0
    events = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3]
    metric = "reward_margin" if style == "dpo" else "kl"  # kto: a margin needs both labels in a batch
    assert all(e.get(metric) is not None for e in events if e["type"] == "step")
    assert any(e["type"] == "eval" for e in events)
    assert (result.run_dir / "curves.png").stat().st_size > 1000
    assert (result.run_dir / "data_card.md").read_text().count("Preference records") == 1
    return manifest


def test_dpo_through_ray_from_the_base(
    dpo_run: TrainingResult, default_model_path: Path, changes_output: Callable[[Path, Path], bool]
) -> None:
    manifest = check_artifact(dpo_run, "dpo")
    assert manifest["hardware"]["ray"] is True and manifest["parent"] is None
    assert any("worker started" in line for line in dpo_run.log)
    assert any("reference: the base model" in line for line in dpo_run.log)
    m = dpo_run.metrics
    assert abs(m["train_loss_first"] - 0.6931) < 1e-3  # log(2): policy == reference at step 1
    assert m["stop_reason"] == "completed"
    # learned: on the held-out pairs the adapter already prefers the chosen answers more than the base does
    # (a loss below log(2) = a positive mean implicit-reward margin)
    assert m["final_eval_loss"] < 0.6931 and m["eval_reward_margin_last"] > 0
    assert dpo_run.adapter_dir is not None
    assert changes_output(default_model_path, dpo_run.adapter_dir)  # the trained adapter changes the output


def test_kto_continues_the_dpo_adapter(
    tiny_config: Callable[..., dict[str, Any]],
    dpo_run: TrainingResult,
    default_model_path: Path,
    tmp_path: Path,
) -> None:
    assert dpo_run.adapter_dir is not None and dpo_run.manifest is not None
    result = train(
        preference_config(
            tiny_config,
            default_model_path,
            tmp_path,
            "kto",
            "kto_tiny.jsonl",
            init_adapter=str(dpo_run.adapter_dir),
        ),
        use_ray=False,
    )
    manifest = check_artifact(result, "kto")
    assert any("reference: the parent adapter" in line for line in result.log)
    parent = manifest["parent"]
    assert parent["relation"] == "continued_from" and parent["name"] == "it-dpo"
    assert parent["sha256"] == dpo_run.manifest["adapter"]["sha256"] != manifest["adapter"]["sha256"]
    assert manifest["adapter"]["lora"]["r"] == 8  # the parent's shape is kept
    counts = manifest["dataset"]["card"]["preference"]["train"]
    assert counts["desirable"] > 0 and counts["undesirable"] > 0
    assert result.metrics["kl_last"] >= 0
