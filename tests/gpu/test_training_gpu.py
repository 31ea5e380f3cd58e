"""GPU checks of the training recipes (skipped without CUDA): SFT, DPO and KTO with QLoRA (NF4) and LoRA
run on the GPU, the device is chosen automatically (also through Ray when it is installed: num_gpus=1),
and the adapter loads with peft."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training"
FIXTURE = FIXTURES / "support_tiny.jsonl"
PREFERENCE_FIXTURES = {"dpo": "preference_tiny.jsonl", "kto": "kto_tiny.jsonl"}


def config(base: Path, runs: Path, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "gpu-support",
        "base_model": str(base),
        "data": {"sources": [{"path": str(FIXTURE)}], "max_seq_length": 256},
        "train": {
            "max_steps": 8,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "lr_scheduler": "constant",
            "eval_every_steps": 4,
        },
        "output": {"runs_dir": str(runs)},
    }
    raw.update(extra)
    return raw


@pytest.fixture(scope="module")
def base_model() -> Path:
    from serving.models import prepare_default_model

    return prepare_default_model()


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_gpu_training_in_process(base_model: Path, tmp_path: Path, quantization: str) -> None:
    from training.api import train

    result = train(config(base_model, tmp_path, quantization=quantization), use_ray=False)
    assert result.ok, result.error
    assert result.metrics["train_loss_last"] < result.metrics["train_loss_first"]
    check_gpu_adapter(result, base_model)


def check_gpu_adapter(result: Any, base_model: Path) -> None:
    """Trained on the GPU (as the manifest says) and the adapter loads onto the base with peft."""
    assert result.device == "cuda"
    assert result.metrics.get("peak_gpu_mem_mb", 0) > 0
    assert result.manifest is not None and result.manifest["hardware"]["device"] == "cuda"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert result.adapter_dir is not None
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base_model)), str(result.adapter_dir)
    )
    assert model is not None


def preference_config(base_model: Path, tmp_path: Path, style: str, quantization: str) -> dict[str, Any]:
    """A short DPO or KTO run on the shipped preference fixture."""
    raw = config(
        base_model,
        tmp_path,
        name=f"gpu-{style}",
        style=style,
        quantization=quantization,
        preference={"beta": 0.1},
    )
    raw["data"] = {
        "sources": [{"path": str(FIXTURES / PREFERENCE_FIXTURES[style])}],
        "max_seq_length": 128,
        "split": {"validation": 0.3, "test": 0},
    }
    raw["train"] = {**raw["train"], "learning_rate": 5e-4}
    return raw


@pytest.mark.parametrize("quantization", ["nf4", "none"])
@pytest.mark.parametrize("style", ["dpo", "kto"])
def test_gpu_preference_training_in_process(
    base_model: Path, tmp_path: Path, style: str, quantization: str
) -> None:
    from training.api import train

    result = train(preference_config(base_model, tmp_path, style, quantization), use_ray=False)
    assert result.ok, result.error
    assert result.manifest is not None and result.manifest["style"] == style
    if style == "dpo":  # the policy moves away from the reference towards the chosen answers
        assert result.metrics["reward_margin_last"] > 0
    check_gpu_adapter(result, base_model)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_gpu_through_ray_reserves_the_gpu(base_model: Path, tmp_path: Path) -> None:
    from training.api import train

    result = train(config(base_model, tmp_path, quantization="nf4", name="gpu-ray"), use_ray=True)
    assert result.ok, result.error
    assert result.device == "cuda"
    assert any("GPU available" in line for line in result.log)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
@pytest.mark.parametrize("style", ["dpo", "kto"])
def test_gpu_preference_through_ray_reserves_the_gpu(base_model: Path, tmp_path: Path, style: str) -> None:
    """DPO and KTO (QLoRA) go through the same Ray dispatch as SFT and get the GPU there."""
    from training.api import train

    result = train(preference_config(base_model, tmp_path, style, "nf4"), use_ray=True)
    assert result.ok, result.error
    assert result.device == "cuda"
    assert result.manifest is not None and result.manifest["style"] == style
    check_gpu_adapter(result, base_model)
