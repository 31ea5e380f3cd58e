"""Static validation of a PEFT LoRA adapter folder before it may take traffic.

`validate_adapter(folder, spec)` either returns a `ValidationReport` or raises `AdapterValidationError`
whose `code` names the rule that failed:

=========================  ==================================================================
code                       rule
=========================  ==================================================================
not_a_folder               the path is not a folder
symlink                    the folder contains a symlink (could point anywhere)
pickle_file                a `*.bin`, `*.pt`, `*.pth`, `*.pkl`, `*.pickle`, `*.ckpt` file is present
missing_file               `adapter_config.json` or `adapter_model.safetensors` is missing
too_large                  the folder is bigger than `spec.max_size_bytes` (default 256 MiB)
bad_config                 `adapter_config.json` is not a JSON object with the needed fields
unsupported_peft_type      `peft_type` is not LORA
unsupported_feature        DoRA (`use_dora`) - the serving engine cannot apply it
base_model_mismatch        `base_model_name_or_path` / fingerprint is not the served base
invalid_rank               `r` is not a positive integer
rank_too_large             `r` (or a `rank_pattern` entry, or a tensor's rank) > engine max rank
unknown_target_module      a target module (or a LoRA tensor's module) is not in the base model
shape_mismatch             a LoRA tensor's shape does not fit the base module it adapts: lora_A is
                           [r, in_features], lora_B is [out_features, r] of that module (hidden size,
                           heads x head_dim, num_key_value_heads x head_dim for k/v projections,
                           intermediate size for MLP modules), both with the same r (= `r` unless a
                           `rank_pattern` is set); checked when the base's module shapes are known
pickle_in_disguise         the .safetensors file is really a pickle / torch zip archive
bad_safetensors            the safetensors header does not parse, or holds no LoRA tensors
non_finite_weights         a tensor contains NaN or Inf
=========================  ==================================================================

The smoke generation (one short completion through the engine) is run later by the serving layer;
its outcome goes into `ValidationReport.smoke` via `with_smoke()`.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from serving.registry.artifacts import PICKLE_SUFFIXES, WEIGHTS_FILE, sha256_file
from serving.registry.errors import AdapterValidationError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_MAX_ADAPTER_BYTES",
    "PICKLE_SUFFIXES",
    "BaseModelSpec",
    "ModuleShapes",
    "SmokeResult",
    "ValidationReport",
    "base_module_shapes",
    "module_shapes_from_config",
    "validate_adapter",
]

CONFIG_FILE = "adapter_config.json"
DEFAULT_MAX_ADAPTER_BYTES = 256 * 1024 * 1024
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_CHUNK_ELEMENTS = 1 << 22
_LORA_KEY = re.compile(r"^(?P<module>.+?)\.lora_(?:A|B|embedding_A|embedding_B)(?:\.[^.]+)*$")
_LORA_MATRIX = re.compile(
    r"^(?P<module>.+?)\.lora_(?P<embedding>embedding_)?(?P<side>A|B)(?:\.default)?(?:\.weight)?$"
)

ModuleShapes = Mapping[str, frozenset[tuple[int, int]]]
"""Short module name -> the (in_features, out_features) pairs the base's modules of that name have
(one pair for most architectures; an embedding's is (num_embeddings, embedding_dim))."""


def _basename(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1].lower()


@dataclass(frozen=True, slots=True)
class BaseModelSpec:
    """What the served base model and engine accept."""

    model_id: str
    """The served base model id or path, e.g. 'HuggingFaceTB/SmolLM2-135M-Instruct'."""
    module_names: frozenset[str]
    """Short names of the base model's modules a LoRA may target, e.g. {'q_proj', 'k_proj', ...}."""
    max_lora_rank: int
    """The engine's `max_lora_rank`."""
    aliases: frozenset[str] = frozenset()
    """Other names the base is known by (ids or paths; compared by basename, case-insensitive)."""
    fingerprint: str | None = None
    """A content fingerprint of the base weights; when both sides know one, it decides the match."""
    max_size_bytes: int = DEFAULT_MAX_ADAPTER_BYTES
    module_shapes: ModuleShapes = field(default_factory=dict)
    """(in_features, out_features) of the base's modules by short name (see `base_module_shapes`); empty
    when unknown, and then LoRA tensor shapes are not checked against the base."""

    def __post_init__(self) -> None:
        if not self.module_names:
            raise ValueError("BaseModelSpec.module_names must list the base model's module names")
        if self.max_lora_rank <= 0:
            raise ValueError("BaseModelSpec.max_lora_rank must be positive")
        object.__setattr__(self, "module_names", frozenset(self.module_names))
        object.__setattr__(self, "aliases", frozenset(self.aliases))
        object.__setattr__(
            self, "module_shapes", {str(k): frozenset(v) for k, v in self.module_shapes.items()}
        )

    @classmethod
    def create(
        cls,
        model_id: str,
        module_names: Collection[str],
        max_lora_rank: int,
        *,
        aliases: Collection[str] = (),
        fingerprint: str | None = None,
        max_size_bytes: int = DEFAULT_MAX_ADAPTER_BYTES,
        module_shapes: Mapping[str, Iterable[tuple[int, int]]] | None = None,
    ) -> BaseModelSpec:
        return cls(
            model_id,
            frozenset(module_names),
            max_lora_rank,
            frozenset(aliases),
            fingerprint,
            max_size_bytes,
            {k: frozenset(v) for k, v in (module_shapes or {}).items()},
        )

    def matches(self, base_model_name_or_path: str) -> bool:
        """True when an adapter's `base_model_name_or_path` names this base (by basename)."""
        names = {_basename(self.model_id), *(_basename(a) for a in self.aliases)}
        return _basename(base_model_name_or_path) in names


@dataclass(frozen=True, slots=True)
class SmokeResult:
    """Outcome of the serving layer's smoke generation through the engine (filled in later)."""

    ok: bool
    output: str = ""
    detail: str = ""
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What static validation established about an adapter folder."""

    folder: str
    sha256: str
    """sha256 hex of adapter_model.safetensors: the version id."""
    base_model: str
    """`base_model_name_or_path` as written in adapter_config.json."""
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    files: tuple[str, ...]
    tensor_count: int
    parameter_count: int
    checks: tuple[str, ...]
    """Names of the rules that passed, in order."""
    adapter_config: Mapping[str, Any] = field(default_factory=dict)
    smoke: SmokeResult | None = None

    def with_smoke(self, result: SmokeResult) -> ValidationReport:
        return replace(self, smoke=result)


def _fail(code: str, message: str, path: Path | str | None = None) -> AdapterValidationError:
    return AdapterValidationError(message, code=code, path=str(path) if path is not None else None)


def _scan_folder(folder: Path) -> tuple[list[Path], int]:
    files: list[Path] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for entry in [*dirnames, *filenames]:
            full = Path(dirpath) / entry
            if full.is_symlink():
                raise _fail("symlink", f"adapter folder contains a symlink: {full}", full)
        for filename in filenames:
            full = Path(dirpath) / filename
            if full.suffix.lower() in PICKLE_SUFFIXES:
                raise _fail(
                    "pickle_file",
                    f"refusing pickle-based file {full.relative_to(folder)} (pickle can run code on load); "
                    "ship only adapter_config.json + adapter_model.safetensors",
                    full,
                )
            files.append(full)
            total += full.stat().st_size
    return files, total


def _load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail("bad_config", f"{CONFIG_FILE} is not valid JSON: {exc}", path) from exc
    if not isinstance(config, dict):
        raise _fail("bad_config", f"{CONFIG_FILE} must hold a JSON object", path)
    return config


def _check_rank(value: Any, what: str, max_rank: int, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail("invalid_rank", f"{what} must be a positive integer, got {value!r}", path)
    if value > max_rank:
        raise _fail(
            "rank_too_large",
            f"{what} = {value} exceeds the engine's max_lora_rank = {max_rank}; retrain with a smaller r "
            "or start the engine with a larger max_lora_rank",
            path,
        )
    return value


def _check_targets(target_modules: Any, spec: BaseModelSpec, path: Path) -> tuple[str, ...]:
    known = sorted(spec.module_names)
    if isinstance(target_modules, str):
        if target_modules == "all-linear":
            return (target_modules,)
        try:
            pattern = re.compile(target_modules)
        except re.error as exc:
            raise _fail(
                "bad_config", f"target_modules regex {target_modules!r} is invalid: {exc}", path
            ) from exc
        # PEFT full-matches the pattern against full module names; try the usual Llama-style forms.
        candidates = [
            form.format(m)
            for m in spec.module_names
            for form in ("{}", "model.layers.0.self_attn.{}", "model.layers.0.mlp.{}")
        ]
        if not any(pattern.fullmatch(c) for c in candidates):
            raise _fail(
                "unknown_target_module",
                f"target_modules pattern {target_modules!r} matches none of the base modules {known}",
                path,
            )
        return (target_modules,)
    if (
        not isinstance(target_modules, list)
        or not target_modules
        or not all(isinstance(t, str) and t for t in target_modules)
    ):
        raise _fail(
            "bad_config",
            f"target_modules must be a non-empty list of module names, got {target_modules!r}",
            path,
        )
    unknown = [t for t in target_modules if t.rsplit(".", 1)[-1] not in spec.module_names]
    if unknown:
        raise _fail(
            "unknown_target_module",
            f"target_modules {unknown} do not exist in the base model (known: {known})",
            path,
        )
    return tuple(target_modules)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError("file shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER_BYTES:
            raise ValueError(f"header length {header_len} is implausible")
        header = json.loads(fh.read(header_len))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, 8 + header_len


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _open_safetensors(path: Path) -> tuple[dict[str, Any], int]:
    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
        return _read_header(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a usable safetensors file"
        if _looks_like_pickle(path):
            raise _fail(
                "pickle_in_disguise",
                f"{path.name} is a pickle / torch archive renamed to .safetensors; refusing to load it",
                path,
            ) from exc
        raise _fail("bad_safetensors", f"{path.name} is not a valid safetensors file: {exc}", path) from exc


def _non_finite(buf: np.ndarray, dtype: str) -> bool:
    """True when the raw little-endian bytes `buf` of a `dtype` tensor hold a NaN or Inf."""
    if dtype == "F32":
        values = buf.view("<f4")
        return not bool(np.isfinite(values).all())
    if dtype == "F64":
        return not bool(np.isfinite(buf.view("<f8")).all())
    if dtype == "F16":
        return bool(((buf.view("<u2") & 0x7C00) == 0x7C00).any())
    if dtype == "BF16":
        return bool(((buf.view("<u2") & 0x7F80) == 0x7F80).any())
    if dtype == "F8_E5M2":
        return bool(((buf & 0x7C) == 0x7C).any())
    if dtype == "F8_E4M3":
        return bool(((buf & 0x7F) == 0x7F).any())
    return False  # integer / bool tensors cannot hold NaN


_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E5M2": 1, "F8_E4M3": 1}


def _is_embedding(module: str) -> bool:
    return "embed" in module or module == "wte"


def module_shapes_from_config(config: Mapping[str, Any]) -> dict[str, frozenset[tuple[int, int]]]:
    """(in, out) features of a Llama-style decoder's linear modules from its HF `config.json` (hidden_size,
    intermediate_size, num_attention_heads, num_key_value_heads, head_dim); {} when they are not there."""
    cfg: Mapping[str, Any] = config
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        cfg = cfg["text_config"]

    def number(key: str) -> int | None:
        value = cfg.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    hidden, heads = number("hidden_size"), number("num_attention_heads")
    if hidden is None or heads is None:
        return {}
    kv_heads = number("num_key_value_heads") or heads
    head_dim = number("head_dim") or hidden // heads
    shapes: dict[str, frozenset[tuple[int, int]]] = {
        "q_proj": frozenset({(hidden, heads * head_dim)}),
        "k_proj": frozenset({(hidden, kv_heads * head_dim)}),
        "v_proj": frozenset({(hidden, kv_heads * head_dim)}),
        "o_proj": frozenset({(heads * head_dim, hidden)}),
    }
    if (intermediate := number("intermediate_size")) is not None:
        shapes["gate_proj"] = shapes["up_proj"] = frozenset({(hidden, intermediate)})
        shapes["down_proj"] = frozenset({(intermediate, hidden)})
    if (vocab := number("vocab_size")) is not None:
        shapes["lm_head"] = frozenset({(hidden, vocab)})
        shapes["embed_tokens"] = frozenset({(vocab, hidden)})
    return shapes


def base_module_shapes(folder: str | os.PathLike[str]) -> dict[str, frozenset[tuple[int, int]]]:
    """(in, out) features of a base model folder's modules by short name: read from its safetensors
    headers (a 2-D `*.weight` is [out, in]; an embedding's [num, dim] gives (num, dim)), else derived
    from `config.json` (`module_shapes_from_config`); {} when neither says (shapes are then not checked)."""
    root = Path(folder)
    found: dict[str, set[tuple[int, int]]] = {}
    for file in sorted(root.glob("*.safetensors")):
        try:
            header, _ = _read_header(file)
        except (OSError, ValueError):
            continue
        for key, info in header.items():
            if key == "__metadata__" or not key.endswith(".weight") or not isinstance(info, dict):
                continue
            shape = info.get("shape")
            if not isinstance(shape, list) or len(shape) != 2:
                continue
            module = key.removesuffix(".weight").rsplit(".", 1)[-1]
            rows, cols = int(shape[0]), int(shape[1])
            found.setdefault(module, set()).add((rows, cols) if _is_embedding(module) else (cols, rows))
    if found:
        return {k: frozenset(v) for k, v in found.items()}
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return module_shapes_from_config(config) if isinstance(config, dict) else {}


def _check_shapes(
    matrices: Mapping[str, Mapping[str, tuple[str, list[int]]]],
    spec: BaseModelSpec,
    config_rank: int | None,
    path: Path,
) -> None:
    """`matrices`: LoRA module path -> side ("A"/"B") -> (tensor key, shape). Raises `shape_mismatch`
    (or `bad_safetensors` for a lora_A without its lora_B, when the base's shapes are known)."""
    known = bool(spec.module_shapes)
    for module_path, sides in sorted(matrices.items()):
        module = module_path.rsplit(".", 1)[-1]
        if "A" not in sides or "B" not in sides:
            if known:
                missing = "lora_B" if "B" not in sides else "lora_A"
                raise _fail("bad_safetensors", f"module {module_path} has no {missing} tensor", path)
            continue
        (a_key, (rank, in_features)), (b_key, (out_features, b_rank)) = sides["A"], sides["B"]
        if rank != b_rank:
            raise _fail(
                "shape_mismatch",
                f"{a_key} has rank {rank} but {b_key} has rank {b_rank}; lora_A is [r, in_features] and "
                "lora_B is [out_features, r] with the same r",
                path,
            )
        if config_rank is not None and rank != config_rank:
            raise _fail(
                "shape_mismatch",
                f"{a_key} has rank {rank} but adapter_config.json says r = {config_rank}",
                path,
            )
        expected = spec.module_shapes.get(module)
        if not expected or (in_features, out_features) in expected:
            continue
        ins = sorted({i for i, _ in expected})
        outs = sorted({o for _, o in expected})
        if in_features not in ins:
            raise _fail(
                "shape_mismatch",
                f"{a_key} has shape [{rank}, {in_features}]: in_features {in_features} does not fit the "
                f"base's {module}, which takes {' or '.join(map(str, ins))} input features",
                path,
            )
        raise _fail(
            "shape_mismatch",
            f"{b_key} has shape [{out_features}, {rank}]: out_features {out_features} does not fit the "
            f"base's {module}, which has {' or '.join(map(str, outs))} output features"
            + (f" (with {in_features} input features)" if out_features in outs else ""),
            path,
        )


def _scan_tensors(
    path: Path, header: dict[str, Any], data_start: int, spec: BaseModelSpec, config_rank: int | None
) -> tuple[int, int]:
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    lora_keys = 0
    parameters = 0
    unknown_modules: set[str] = set()
    matrices: dict[str, dict[str, tuple[str, list[int]]]] = {}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        for key, info in sorted(tensors.items()):
            shape = [int(d) for d in info["shape"]]
            dtype = str(info["dtype"])
            begin, end = (int(x) for x in info["data_offsets"])
            parameters += int(np.prod(shape)) if shape else 1
            match = _LORA_KEY.match(key)
            if match:
                lora_keys += 1
                module = match.group("module").rsplit(".", 1)[-1]
                if module not in spec.module_names:
                    unknown_modules.add(module)
                matrix = _LORA_MATRIX.match(key)
                if matrix:
                    side = matrix.group("side")
                    if len(shape) != 2 or min(shape) <= 0:
                        raise _fail(
                            "shape_mismatch",
                            f"tensor {key} has shape {shape}; a LoRA matrix is 2-D "
                            f"({'[r, in_features]' if side == 'A' else '[out_features, r]'})",
                            path,
                        )
                    matrices.setdefault(matrix.group("module"), {})[side] = (key, shape)
                if ".lora_A" in key and shape:
                    _check_rank(shape[0], f"rank of tensor {key}", spec.max_lora_rank, path)
            item = _ITEM_BYTES.get(dtype)
            if item is None:
                continue
            raw = data[data_start + begin : data_start + end]
            step = _CHUNK_ELEMENTS * item
            for offset in range(0, len(raw), step):
                if _non_finite(np.asarray(raw[offset : offset + step]), dtype):
                    raise _fail("non_finite_weights", f"tensor {key} contains NaN or Inf values", path)
    finally:
        del data
    if unknown_modules:
        raise _fail(
            "unknown_target_module",
            f"LoRA tensors target modules {sorted(unknown_modules)} that the base model does not have "
            f"(known: {sorted(spec.module_names)})",
            path,
        )
    if lora_keys == 0:
        raise _fail("bad_safetensors", f"{path.name} holds no LoRA tensors (no '*.lora_A.*' keys)", path)
    _check_shapes(matrices, spec, config_rank, path)
    return len(tensors), parameters


def validate_adapter(
    folder: str | os.PathLike[str], spec: BaseModelSpec, *, adapter_fingerprint: str | None = None
) -> ValidationReport:
    """Statically validate a PEFT LoRA adapter folder against the served base model.

    `adapter_fingerprint` is the base-model fingerprint the adapter was trained on, when known (e.g. from
    a training manifest); if both it and `spec.fingerprint` are set they must be equal, and then the
    base-model name check is not needed. Raises `AdapterValidationError` at the first failed rule.
    """
    root = Path(folder)
    checks: list[str] = []
    if not root.is_dir():
        raise _fail("not_a_folder", f"adapter path {str(root)!r} does not exist or is not a folder", root)
    files, total = _scan_folder(root)
    checks += ["no_symlinks", "no_pickle"]
    config_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise _fail("missing_file", f"adapter folder {str(root)!r} has no {required.name}", required)
    checks.append("required_files")
    if total > spec.max_size_bytes:
        raise _fail(
            "too_large",
            f"adapter folder is {total} bytes, over the limit of {spec.max_size_bytes} bytes",
            root,
        )
    checks.append("size")

    config = _load_config(config_path)
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        raise _fail(
            "unsupported_peft_type",
            f"peft_type is {peft_type!r}; only LORA adapters can be served",
            config_path,
        )
    if config.get("use_dora"):
        raise _fail(
            "unsupported_feature", "DoRA adapters (use_dora=true) cannot be served by the engine", config_path
        )
    checks.append("peft_type")

    base_name = config.get("base_model_name_or_path")
    if adapter_fingerprint is not None and spec.fingerprint is not None:
        if adapter_fingerprint != spec.fingerprint:
            raise _fail(
                "base_model_mismatch",
                f"adapter was trained on a base with fingerprint {adapter_fingerprint[:16]}..., the served "
                f"base has {spec.fingerprint[:16]}...",
                config_path,
            )
    elif not isinstance(base_name, str) or not base_name:
        raise _fail(
            "bad_config",
            f"{CONFIG_FILE} has no base_model_name_or_path, so the base model cannot be checked; set it to "
            f"{spec.model_id!r} (or register with the base model's fingerprint)",
            config_path,
        )
    elif not spec.matches(base_name):
        raise _fail(
            "base_model_mismatch",
            f"adapter was trained on {base_name!r}, but the served base model is {spec.model_id!r}",
            config_path,
        )
    checks.append("base_model")

    rank = _check_rank(config.get("r"), "r", spec.max_lora_rank, config_path)
    rank_pattern = config.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict):
        raise _fail("bad_config", "rank_pattern must be an object", config_path)
    for pattern, value in rank_pattern.items():
        _check_rank(value, f"rank_pattern[{pattern!r}]", spec.max_lora_rank, config_path)
    checks.append("rank")
    alpha = config.get("lora_alpha", rank)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise _fail("bad_config", f"lora_alpha must be a number, got {alpha!r}", config_path)
    targets = _check_targets(config.get("target_modules"), spec, config_path)
    checks.append("target_modules")

    header, data_start = _open_safetensors(weights_path)
    checks.append("safetensors_header")
    config_rank = None if rank_pattern else rank
    tensor_count, parameters = _scan_tensors(weights_path, header, data_start, spec, config_rank)
    checks += ["tensor_modules", "finite_weights", "tensor_shapes"]

    return ValidationReport(
        folder=str(root),
        sha256=sha256_file(weights_path),
        base_model=base_name if isinstance(base_name, str) else "",
        rank=rank,
        alpha=float(alpha),
        target_modules=targets,
        size_bytes=total,
        files=tuple(sorted(f.relative_to(root).as_posix() for f in files)),
        tensor_count=tensor_count,
        parameter_count=parameters,
        checks=tuple(checks),
        adapter_config=config,
    )
