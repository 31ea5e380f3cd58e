"""The run folder and the adapter artifact with its lineage manifest.

Layout of a finished run (`<runs_dir>/<run_id>/`):

    adapter/adapter_config.json        PEFT config (base_model_name_or_path = the base model id)
    adapter/adapter_model.safetensors  LoRA weights (no pickle files anywhere in adapter/)
    adapter/tuneloop_manifest.json     lineage: base model id + fingerprint, parent adapter, dataset hash +
                                       data card, config, metrics, code version, duration, hardware
    data_card.json / data_card.md      the data card
    data/validation.jsonl, test.jsonl  held-out formatted examples (for evals)
    metrics.jsonl, curves.png          per-step metrics and their plot
    config.yaml                        the resolved config

Everything is written into `<runs_dir>/.tmp-<run_id>/` and moved into place with one rename only after
the adapter verified (safetensors parses, tensors finite); a failed, cancelled or out-of-disk run removes
its temporary folder, so no partial artifact ever appears under its final name.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from common.manifest import MANIFEST_FILE
from training.errors import ArtifactError, OutOfDiskError

__all__ = [
    "ADAPTER_FILES",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA",
    "RunPaths",
    "code_version",
    "commit_run",
    "discard_run",
    "new_run_id",
    "read_manifest",
    "run_paths",
    "verify_adapter",
    "write_bytes",
]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST_SCHEMA = "tuneloop.training_manifest/v1"
_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "ray")


@dataclass(frozen=True)
class RunPaths:
    run_id: str
    runs_dir: Path
    tmp_dir: Path
    final_dir: Path
    checkpoint_dir: Path

    @property
    def adapter_dir(self) -> Path:
        return self.final_dir / "adapter"


def new_run_id(name: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(3)}"


def run_paths(runs_dir: Path, name: str, run_id: str) -> RunPaths:
    return RunPaths(
        run_id=run_id,
        runs_dir=runs_dir,
        tmp_dir=runs_dir / f".tmp-{run_id}",
        final_dir=runs_dir / run_id,
        checkpoint_dir=runs_dir / ".checkpoints" / name,
    )


def _disk_error(exc: OSError, path: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfDiskError(f"out of disk space while writing {path}: {exc.strerror}")
    return ArtifactError(f"cannot write {path}: {exc}")


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file, fsync it, and turn ENOSPC into OutOfDiskError (all run-folder writes go through here)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _disk_error(exc, path) from None


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode())


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())


def write_yaml(path: Path, data: Any) -> None:
    write_bytes(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode())


def begin_run(paths: RunPaths) -> None:
    try:
        paths.tmp_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ArtifactError(f"temporary run folder already exists: {paths.tmp_dir}") from None
    except OSError as exc:
        raise _disk_error(exc, paths.tmp_dir) from None


def verify_adapter(folder: Path) -> dict[str, int]:
    """Check an adapter folder: exactly the PEFT files (+ manifest), a parseable safetensors file with LoRA
    tensors, finite values. Returns file sizes. Raises ArtifactError."""
    import torch
    from safetensors.torch import load_file

    names = {p.name for p in folder.iterdir()}
    extra = names - {*ADAPTER_FILES, MANIFEST_FILE}
    if extra:
        raise ArtifactError(f"unexpected files in adapter folder {folder}: {sorted(extra)}")
    missing = set(ADAPTER_FILES) - names
    if missing:
        raise ArtifactError(f"adapter folder {folder} lacks {sorted(missing)}")
    try:
        tensors = load_file(str(folder / "adapter_model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"adapter weights do not parse: {exc}") from None
    if not any(".lora_A." in k for k in tensors):
        raise ArtifactError("adapter weights hold no LoRA tensors")
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ArtifactError(f"adapter tensor {key} has NaN/inf values")
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def commit_run(paths: RunPaths) -> Path:
    """Move the finished temporary folder to its final name (one rename on the same filesystem)."""
    if paths.final_dir.exists():
        raise ArtifactError(f"run folder already exists: {paths.final_dir}")
    try:
        os.replace(paths.tmp_dir, paths.final_dir)
    except OSError as exc:
        raise _disk_error(exc, paths.final_dir) from None
    return paths.final_dir


def discard_run(paths: RunPaths) -> None:
    shutil.rmtree(paths.tmp_dir, ignore_errors=True)


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    return json.loads((adapter_dir / MANIFEST_FILE).read_text(encoding="utf-8"))


def code_version() -> dict[str, Any]:
    """git sha (and dirty flag) of the checkout holding this package, when there is one; package versions."""
    info: dict[str, Any] = {"git_sha": None}
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0:
            info["git_sha"] = sha.stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--", "training"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            )
            info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    packages: dict[str, str] = {}
    for name in ("tuneloop", *_PACKAGES):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    info["packages"] = packages
    return info
