"""Shared fixtures of the training integration tests: a tiny training config (a handful of optimizer steps
on ~40 short support conversations) and a local Ray cluster per test module (`ray_cluster`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "training" / "support_tiny.jsonl"

TinyConfig = Callable[..., dict[str, Any]]


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


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
