"""The training manifest as the rest of the system reads it: the file every trained adapter folder carries
(`tuneloop_manifest.json`, written by `training.api`; schema `tuneloop.training_manifest/v1`) and the
lineage facts registration takes from it (dataset hash, training config, the parent's weights hash).

Training writes the manifest; the registry, the loop and the CLI read it only through here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST_FILE = "tuneloop_manifest.json"


def manifest_path(adapter_dir: str | Path) -> Path | None:
    """The manifest of an adapter folder: inside it (training's layout) or next to it; None without one."""
    folder = Path(adapter_dir)
    for path in (folder / MANIFEST_FILE, folder.parent / MANIFEST_FILE):
        if path.is_file():
            return path
    return None


def load_manifest(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter folder's manifest as a mapping; {} for an adapter not trained by tuneloop."""
    path = manifest_path(adapter_dir)
    if path is None:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def dataset_hash(manifest: dict[str, Any]) -> str | None:
    dataset = manifest.get("dataset")
    value = dataset.get("hash") if isinstance(dataset, dict) else None
    return str(value) if value else None


def parent_sha256(manifest: dict[str, Any]) -> str | None:
    """The weights hash (= registry version) of the adapter training started from, if any."""
    parent = manifest.get("parent")
    value = parent.get("sha256") if isinstance(parent, dict) else None
    return str(value) if value else None


def training_config(manifest: dict[str, Any]) -> dict[str, Any] | None:
    config = manifest.get("config")
    return config if isinstance(config, dict) else None
