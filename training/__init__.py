"""tuneloop training: data preparation and LoRA/QLoRA fine-tuning as a Ray task, producing PEFT adapter
folders with a lineage manifest.

Public API (imported lazily, so `import training` stays cheap):

    train(config, *, use_ray=True, progress=False, on_event=None, overrides=None) -> TrainingResult
    submit(config, ...) -> TrainingJob            # .wait(), .cancel(), .done()
    validate(config, *, device="cpu") -> TrainingConfig
    load_config(path, overrides=None) -> TrainingConfig

This package never imports `serving`, `evals`, `monitoring` or `tuneloop`; it meets them through files
(the adapter folder + `tuneloop_manifest.json`) and the request-log tables.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TrainingConfig",
    "TrainingError",
    "TrainingJob",
    "TrainingResult",
    "load_config",
    "submit",
    "train",
    "validate",
]

_LAZY = {
    "train": "training.api",
    "submit": "training.api",
    "validate": "training.api",
    "TrainingJob": "training.api",
    "TrainingConfig": "training.config",
    "load_config": "training.config",
    "TrainingResult": "training.result",
    "TrainingError": "training.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
