"""Fakes shared by the training unit tests: a recipe stand-in that emits events and returns a tiny LoRA
adapter (no model weights are loaded)."""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import save

from training.errors import TrainingCancelled
from training.recipes.lora_sft import RecipeOutput


def adapter_files(nan: bool = False) -> dict[str, bytes]:
    a = torch.zeros(4, 576)
    if nan:
        a[0, 0] = float("nan")
    tensors = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(576, 4),
    }
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": "SmolLM2-135M-Instruct",
    }
    return {"adapter_config.json": json.dumps(config).encode(), "adapter_model.safetensors": save(tensors)}


def fake_run(
    files: dict[str, bytes] | None = None, error: Exception | None = None, wait_for_stop: bool = False
):  # type: ignore[no-untyped-def]
    def run_local(job: Any, emit: Any, token: Any) -> RecipeOutput:
        emit({"type": "start", "max_steps": 2, "epochs": 1.0, "device": "cpu", "start_step": 0})
        for step, loss in ((1, 2.0), (2, 1.5)):
            emit(
                {
                    "type": "step",
                    "step": step,
                    "epoch": step / 2,
                    "loss": loss,
                    "lr": 1e-4,
                    "grad_norm": 1.0,
                    "tokens": 100 * step,
                    "tokens_per_s": 50.0,
                    "rss_mb": 100.0,
                    "gpu_mem_mb": None,
                    "elapsed_s": step,
                }
            )
        emit({"type": "eval", "step": 2, "epoch": 1.0, "eval_loss": 1.7, "elapsed_s": 2.5})
        if wait_for_stop:
            assert token._event.wait(30)
            raise TrainingCancelled("cancelled at step 2")
        if error is not None:
            raise error
        return RecipeOutput(
            adapter_files=files or adapter_files(),
            stop_reason="completed",
            final_eval_loss=1.7,
            train_seconds=1.0,
            hardware={"device": "cpu"},
        )

    return run_local
