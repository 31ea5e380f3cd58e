"""Fixtures shared by the serving unit tests: a registry on SQLite + a local artifact store under
`tmp_path`, and fresh adapter folders."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.registry import AdapterRegistry, ArtifactStore
from serving.registry.testing import SMOLLM2_BASE, SMOLLM2_MODULES, write_adapter
from serving.store import Database


@pytest.fixture
def make_registry(tmp_path: Path) -> Callable[..., AdapterRegistry]:
    """`make_registry(root=None)`: a new registry instance (own connections, as another replica would
    have) over the same database `tmp_path/registry.db`; artifacts under `root` (default
    `tmp_path/adapters`), cache `tmp_path/cache`. The base is SmolLM2-135M-Instruct, also known as
    `local-folder`."""

    def make(root: str | Path | None = None) -> AdapterRegistry:
        db = Database(f"sqlite:///{tmp_path}/registry.db")
        store = ArtifactStore(root or tmp_path / "adapters", cache_dir=tmp_path / "cache")
        return AdapterRegistry(
            db, store, SMOLLM2_BASE, SMOLLM2_MODULES, max_lora_rank=16, base_aliases=("local-folder",)
        )

    return make


@pytest.fixture
def registry(make_registry: Callable[..., AdapterRegistry]) -> AdapterRegistry:
    return make_registry()


@pytest.fixture
def new_adapter(tmp_path: Path) -> Callable[..., Path]:
    """`new_adapter(seed, **write_adapter_kwargs)`: a new adapter folder (same seed -> same weights)."""

    def make(seed: int, **kwargs: object) -> Path:
        folder = tmp_path / f"adapter-{seed}-{uuid.uuid4().hex[:8]}"
        return write_adapter(folder, seed=seed, **kwargs)  # type: ignore[arg-type]

    return make
