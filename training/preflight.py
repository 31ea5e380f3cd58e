"""Checks that need the filesystem, run after config parsing and before any weights load (seconds, not
minutes): the base model folder, the LoRA target modules (read from the safetensors headers), the parent
adapter and its base model, the data sources' existence / encoding / columns, the device/optimizer
combination, and free disk space for the run folder.

`preflight(config, device)` returns a `Preflight` with the facts later steps need (base fingerprint,
module names, parent adapter info) or raises `ConfigError` / `DataError` / `OutOfDiskError`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.manifest import load_manifest
from training.config import TrainingConfig
from training.data.format import check_template_for_style, resolve_columns, resolve_template
from training.data.sources import peek_columns, source_label
from training.errors import ConfigError, DataError, OutOfDiskError

__all__ = [
    "MIN_FREE_BYTES",
    "ParentAdapter",
    "Preflight",
    "base_model_fingerprint",
    "linear_module_names",
    "preflight",
    "sha256_file",
]

MIN_FREE_BYTES = 256 * 2**20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
EIGHT_BIT_OPTIMIZERS = {"adamw_8bit", "paged_adamw_8bit"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def base_model_fingerprint(folder: Path) -> str:
    """sha256 over config.json and the weight files' names and sizes (weights are not read).

    The same definition as the serving registry's `base_model_fingerprint`, so the fingerprint in a
    training manifest can be compared with the served base."""
    digest = hashlib.sha256()
    digest.update((folder / "config.json").read_bytes())
    for weight in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)):
        digest.update(f"\0{weight.name}\0{weight.stat().st_size}".encode())
    return digest.hexdigest()


def linear_module_names(folder: Path) -> set[str]:
    """Dotted names of 2-D weight modules in the safetensors headers (embeddings excluded)."""
    names: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for tensor, meta in header.items():
            if tensor == "__metadata__" or not tensor.endswith(".weight") or len(meta.get("shape", [])) != 2:
                continue
            module = tensor.removesuffix(".weight")
            if "embed" not in module.rsplit(".", 1)[-1]:
                names.add(module)
    return names


@dataclass(frozen=True)
class ParentAdapter:
    """The adapter a sequential/transfer run starts from."""

    path: Path
    sha256: str
    base_model: str
    base_fingerprint: str | None
    r: int
    target_modules: list[str]
    manifest: dict[str, Any] | None


@dataclass(frozen=True)
class Preflight:
    base_fingerprint: str
    module_names: frozenset[str]
    parent: ParentAdapter | None
    device: str


def _check_base_model(config: TrainingConfig) -> Path:
    if config.base_model is None:
        raise ConfigError(
            "no base model: set base_model to a local model folder "
            "(`tuneloop train` fills in the default model)",
            key="base_model",
        )
    folder = config.base_model
    if not folder.is_dir():
        raise ConfigError(f"base model folder does not exist: {folder}", key="base_model")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} is not a model folder (no config.json)", key="base_model")
    if not any(folder.glob("*.safetensors")):
        raise ConfigError(f"{folder} has no *.safetensors weights", key="base_model")
    return folder


def _check_targets(config: TrainingConfig, modules: set[str]) -> None:
    short = sorted({m.rsplit(".", 1)[-1] for m in modules})
    for target in config.lora.target_modules:
        if target == "all-linear":
            continue
        if not any(m == target or m.endswith("." + target) for m in modules):
            raise ConfigError(
                f"'{target}' is not a linear module of the base model "
                f"(its linear modules: {', '.join(short)})",
                key="lora.target_modules",
            )
        if target.rsplit(".", 1)[-1] == "lm_head":
            raise ConfigError(
                "LoRA on lm_head is not supported (the fused LM head would ignore it)",
                key="lora.target_modules",
            )


def _check_parent(config: TrainingConfig, base_fp: str) -> ParentAdapter | None:
    folder = config.init_adapter
    if folder is None:
        return None
    key = "init_adapter"
    if not folder.is_dir():
        raise ConfigError(f"adapter folder does not exist: {folder}", key=key)
    cfg_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise ConfigError(
            f"{folder} is not a PEFT adapter folder (needs adapter_config.json and "
            "adapter_model.safetensors)",
            key=key,
        )
    try:
        adapter_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_file} is not valid JSON: {exc}", key=key) from None
    if str(adapter_cfg.get("peft_type", "")).upper() != "LORA":
        raise ConfigError(
            f"{folder} is a {adapter_cfg.get('peft_type')} adapter; only LoRA can be continued", key=key
        )
    manifest = load_manifest(folder) or None
    parent_fp = (manifest or {}).get("base_model", {}).get("fingerprint")
    parent_base = str(adapter_cfg.get("base_model_name_or_path") or "")
    if parent_fp is not None:
        if parent_fp != base_fp:
            raise ConfigError(
                f"adapter {folder} was trained on another base model "
                f"({parent_base or 'unknown'}, fingerprint "
                f"{parent_fp[:12]}...), not on {config.base_model} (fingerprint {base_fp[:12]}...)",
                key=key,
            )
    elif Path(parent_base).name.lower() != config.base_id.rsplit("/", 1)[-1].lower():
        raise ConfigError(
            f"adapter {folder} was trained on base model {parent_base!r}, not on {config.base_id!r}", key=key
        )
    targets = adapter_cfg.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return ParentAdapter(
        path=folder,
        sha256=sha256_file(weights),
        base_model=parent_base,
        base_fingerprint=parent_fp,
        r=int(adapter_cfg.get("r", 0)),
        target_modules=list(targets),
        manifest=manifest,
    )


def _check_sources(config: TrainingConfig) -> None:
    for i, source in enumerate(config.data.sources):
        label = source_label(source, i)
        where = f"data.sources.{i} ({label})"
        try:
            columns = peek_columns(source)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        if source.kind == "request_log":
            continue
        template = resolve_template(source.template, source.columns, columns, where)
        check_template_for_style(config.style, template, where)
        resolve_columns(template, source.columns, columns, where)


def _check_device(config: TrainingConfig, device: str) -> None:
    if config.train.optimizer in EIGHT_BIT_OPTIMIZERS and device != "cuda":
        raise ConfigError(
            f"'{config.train.optimizer}' needs CUDA (bitsandbytes 8-bit optimizers do not run on CPU) "
            "and this "
            "run goes to a CPU; use optimizer: auto or adamw_torch",
            key="train.optimizer",
        )
    if config.runtime.device == "cuda" and device != "cuda":
        raise ConfigError("runtime.device is 'cuda' but no GPU is available", key="runtime.device")


def _check_disk(config: TrainingConfig) -> None:
    runs = config.output.runs_dir
    probe = runs
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_BYTES:
        raise OutOfDiskError(
            f"only {free // 2**20} MiB free on the disk of {runs}; "
            f"a run needs at least {MIN_FREE_BYTES // 2**20} MiB"
        )


def preflight(config: TrainingConfig, device: str = "cpu") -> Preflight:
    """Validate everything that can be checked without loading weights; see the module docstring."""
    folder = _check_base_model(config)
    modules = linear_module_names(folder)
    _check_targets(config, modules)
    base_fp = base_model_fingerprint(folder)
    parent = _check_parent(config, base_fp)
    _check_device(config, device)
    _check_sources(config)
    _check_disk(config)
    return Preflight(base_fingerprint=base_fp, module_names=frozenset(modules), parent=parent, device=device)
