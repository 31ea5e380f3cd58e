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

__all__ = ["SMOLLM2_BASE", "SMOLLM2_CONFIG", "SMOLLM2_MODULES", "SMOLLM2_SHAPES", "write_adapter"]

SMOLLM2_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The base model id test adapters name by default."""

SMOLLM2_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
"""Short names of SmolLM2's (Llama architecture) linear modules."""

SMOLLM2_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
}
"""The shape fields of SmolLM2-135M's config.json (hidden 576, 9 heads x 64, 3 kv heads x 64, MLP 1536)."""

SMOLLM2_SHAPES: dict[str, tuple[int, int]] = {
    "q_proj": (576, 576),
    "k_proj": (576, 192),
    "v_proj": (576, 192),
    "o_proj": (576, 576),
    "gate_proj": (576, 1536),
    "up_proj": (576, 1536),
    "down_proj": (1536, 576),
}
"""(in, out) features of SmolLM2-135M's linear modules: what `module_shapes` takes for loadable adapters."""

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
