"""Training recipes: one readable file per procedure, chosen by the config's `style` (`recipe_for`).

* `lora_sft`: LoRA/QLoRA supervised fine-tuning (styles sft, domain, multitask, sequential, transfer);
* `lora_preference`: LoRA/QLoRA preference tuning (styles dpo, kto);
* `steps`: the steps both compose (base model, adapter, arguments, checkpoints, outcome, adapter bytes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["RECIPES", "recipe_for"]

RECIPES: dict[str, str] = {
    "sft": "training.recipes.lora_sft",
    "domain": "training.recipes.lora_sft",
    "multitask": "training.recipes.lora_sft",
    "sequential": "training.recipes.lora_sft",
    "transfer": "training.recipes.lora_sft",
    "dpo": "training.recipes.lora_preference",
    "kto": "training.recipes.lora_preference",
}
"""style -> the module whose `run(job, emit, should_stop) -> RecipeOutput` trains it."""


def recipe_for(style: str) -> Callable[..., Any]:
    """The `run` function of the recipe that trains `style` (imported on first use: torch, TRL)."""
    run: Callable[..., Any] = importlib.import_module(RECIPES[style]).run
    return run
