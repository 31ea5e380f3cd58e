"""Shared fixtures for the training unit tests: fixture paths, the default model folder (tokenizer and
safetensors headers only - no weights are loaded in unit tests), a minimal config builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "training"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def base_model() -> Path:
    from serving.models import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tokenizer(base_model: Path) -> Any:
    from training.data.pipeline import load_tokenizer

    return load_tokenizer(base_model)


@pytest.fixture
def make_config(base_model: Path, tmp_path: Path) -> Any:
    """make_config(sources=[...], **sections) -> a validated TrainingConfig writing runs under tmp_path."""
    from training.config import parse_config

    def build(sources: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
        data = {"sources": sources or [{"path": str(FIXTURES / "support_tiny.jsonl")}]}
        data.update(extra.pop("data", {}))
        raw: dict[str, Any] = {
            "name": "unit",
            "base_model": str(base_model),
            "data": data,
            "output": {"runs_dir": str(tmp_path / "runs")},
        }
        raw.update(extra)
        return parse_config(raw)

    return build
