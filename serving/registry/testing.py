"""Test support: write tiny PEFT-style LoRA adapter folders (numpy + safetensors, no torch).

Used by the registry's own tests and by any test that needs an adapter folder on disk. With
`module_shapes` matching a real base model (e.g. SmolLM2-135M: hidden 576, k/v out 192, 30 layers) the
folder also loads in vLLM / peft.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

__all__ = ["SMOLLM2_BASE", "SMOLLM2_MODULES", "write_adapter"]

SMOLLM2_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The base model id test adapters name by default."""

SMOLLM2_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
"""Short names of SmolLM2's (Llama architecture) linear modules."""

_MLP = {"gate_proj", "up_proj", "down_proj"}


def write_adapter(
    folder: str | Path,
    *,
    base_model: str = SMOLLM2_BASE,
    r: int = 4,
    alpha: float = 8,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    layers: int = 2,
    hidden: int = 16,
    module_shapes: Mapping[str, tuple[int, int]] | None = None,
    seed: int = 0,
    scale: float = 0.01,
    dtype: str = "float32",
    config_overrides: Mapping[str, Any] | None = None,
    tensor_overrides: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` into `folder` (created) and return it.

    Different `seed`s give different weights (so different versions). `module_shapes` maps a module name to
    (in_features, out_features), default (hidden, hidden). `tensor_overrides` replaces or adds tensors
    by key (e.g. to plant a NaN)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = dict(module_shapes or {})
    tensors: dict[str, np.ndarray] = {}
    for layer in range(layers):
        for module in target_modules:
            block = "mlp" if module in _MLP else "self_attn"
            in_features, out_features = shapes.get(module, (hidden, hidden))
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((r, in_features)) * scale).astype(dtype)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((out_features, r)) * scale).astype(
                dtype
            )
    tensors.update(tensor_overrides or {})
    save_file(tensors, str(root / "adapter_model.safetensors"))
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": None,
    }
    config.update(config_overrides or {})
    (root / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return root
