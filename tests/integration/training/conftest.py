"""Shared fixtures of the training integration tests: a tiny training config (a handful of optimizer steps
on ~40 short support conversations) and a check that a trained adapter changes the base model's output;
the local Ray cluster per test module (`ray_cluster`) comes from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "training" / "support_tiny.jsonl"

TinyConfig = Callable[..., dict[str, Any]]
ChangesOutput = Callable[[Path, Path], bool]


def make_tiny_config(base: Path, runs: Path, **changes: Any) -> dict[str, Any]:
    """A small training config; `changes` set sections (`name=...`) or fields (`train__max_steps=1`)."""
    raw: dict[str, Any] = {
        "name": "it-support",
        "base_model": str(base),
        "data": {"sources": [{"path": str(FIXTURE)}], "max_rows": 40, "max_seq_length": 128},
        "lora": {"r": 8},
        "train": {
            "max_steps": 4,
            "epochs": 10,
            "batch_size": 2,
            "learning_rate": 2e-3,
            "warmup_ratio": 0.0,
            "lr_scheduler": "constant",
            "eval_every_steps": 2,
        },
        "runtime": {"num_cpus": 1, "timeout_s": 900},
        "output": {"runs_dir": str(runs)},
    }
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[section] = value
    return raw


@pytest.fixture(scope="session")
def tiny_config() -> TinyConfig:
    """`tiny_config(base_model, runs_dir, **changes)` -> a small training config mapping."""
    return make_tiny_config


def adapter_changes_output(base: Path, adapter_dir: Path) -> bool:
    """Whether the adapter in `adapter_dir`, loaded by peft over the base model, changes its logits on a
    short prompt."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        after = PeftModel.from_pretrained(model, str(adapter_dir)).eval()(input_ids=ids).logits
    return not torch.allclose(before, after)


@pytest.fixture(scope="session")
def changes_output() -> ChangesOutput:
    """`changes_output(base_model, adapter_dir)` -> whether the adapter changes the base model's output."""
    return adapter_changes_output
