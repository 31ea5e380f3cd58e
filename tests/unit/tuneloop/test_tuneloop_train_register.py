"""`tuneloop train --register NAME` hands the finished adapter to the registry with its lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.manifest import MANIFEST_FILE
from serving.registry import AdapterRegistry, ArtifactStore
from serving.registry.testing import SMOLLM2_MODULES, write_adapter
from serving.store import Database
from tuneloop import cli


def test_registrar_records_parent_and_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = AdapterRegistry(
        Database(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        ArtifactStore(str(tmp_path / "reg")),
        "SmolLM2-135M-Instruct",
        SMOLLM2_MODULES,
        16,
    )
    monkeypatch.setattr("tuneloop.commands.adapters.open_cli_registry", lambda config: (registry, None))
    parent = registry.register(
        write_adapter(tmp_path / "p", base_model="SmolLM2-135M-Instruct", seed=1), "support"
    )
    child = write_adapter(tmp_path / "c", base_model="SmolLM2-135M-Instruct", seed=2)
    manifest = {"parent": {"sha256": parent.version}, "dataset": {"hash": "d" * 16}, "config": {"name": "x"}}
    (child / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")  # as training writes it
    ref = cli._register_trained_adapter(child, "support", manifest)
    version = registry.get("support", ref.split("@")[1])
    assert version.parent == parent.ref
    assert version.dataset_hash == "d" * 16 and version.training_config == {"name": "x"}
    bad = write_adapter(tmp_path / "bad", base_model="other/model", seed=3)
    with pytest.raises(RuntimeError, match="base"):
        cli._register_trained_adapter(bad, "support", {})
