"""Static adapter validation: one valid folder and one folder per rule that must be refused."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.api.errors import registry_status
from serving.registry import AdapterValidationError, BaseModelSpec, SmokeResult, sha256_file, validate_adapter
from serving.registry.testing import SMOLLM2_CONFIG, SMOLLM2_MODULES, SMOLLM2_SHAPES, write_adapter
from serving.registry.validation import base_module_shapes, module_shapes_from_config

SPEC = BaseModelSpec.create("HuggingFaceTB/SmolLM2-135M-Instruct", SMOLLM2_MODULES, max_lora_rank=16)


def refused(folder: Path, code: str, spec: BaseModelSpec = SPEC, **kwargs: str) -> AdapterValidationError:
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter(folder, spec, **kwargs)
    assert info.value.code == code, info.value.message
    assert registry_status(info.value) == 400
    assert info.value.message
    return info.value


def test_valid_adapter_passes_with_a_full_report(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a", r=8, alpha=16, target_modules=("q_proj", "k_proj"), layers=3)
    report = validate_adapter(folder, SPEC)
    assert report.sha256 == sha256_file(folder / "adapter_model.safetensors")
    assert (report.rank, report.alpha) == (8, 16.0)
    assert report.target_modules == ("q_proj", "k_proj")
    assert report.tensor_count == 12  # 3 layers x 2 modules x (A, B)
    assert report.parameter_count == 12 * 8 * 16
    assert report.files == ("adapter_config.json", "adapter_model.safetensors")
    assert "finite_weights" in report.checks and "no_pickle" in report.checks
    assert report.smoke is None
    assert report.with_smoke(SmokeResult(ok=True, output="Paris")).smoke == SmokeResult(
        ok=True, output="Paris"
    )


def test_base_model_matches_by_basename_alias_or_fingerprint(tmp_path: Path) -> None:
    local = write_adapter(tmp_path / "local", base_model="/models/SmolLM2-135M-Instruct/")
    assert validate_adapter(local, SPEC).base_model == "/models/SmolLM2-135M-Instruct/"
    other = write_adapter(tmp_path / "other", base_model="my-org/smollm-finetune-base")
    refused(other, "base_model_mismatch")
    with_alias = BaseModelSpec.create(SPEC.model_id, SMOLLM2_MODULES, 16, aliases={"smollm-finetune-base"})
    assert validate_adapter(other, with_alias).base_model == "my-org/smollm-finetune-base"
    fingerprinted = BaseModelSpec.create(SPEC.model_id, SMOLLM2_MODULES, 16, fingerprint="f" * 64)
    assert validate_adapter(other, fingerprinted, adapter_fingerprint="f" * 64)
    refused(local, "base_model_mismatch", fingerprinted, adapter_fingerprint="0" * 64)
    unnamed = write_adapter(tmp_path / "unnamed", config_overrides={"base_model_name_or_path": None})
    assert "base_model_name_or_path" in refused(unnamed, "bad_config").message
    assert validate_adapter(unnamed, fingerprinted, adapter_fingerprint="f" * 64).base_model == ""


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".pkl", ".ckpt"])
def test_pickle_files_are_refused(tmp_path: Path, suffix: str) -> None:
    folder = write_adapter(tmp_path / "a")
    (folder / f"adapter_model{suffix}").write_bytes(pickle.dumps({"x": 1}))
    assert "pickle" in refused(folder, "pickle_file").message


def test_pickle_renamed_to_safetensors_is_refused(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a")
    (folder / "adapter_model.safetensors").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    refused(folder, "pickle_in_disguise")
    (folder / "adapter_model.safetensors").write_bytes(b"PK\x03\x04 a torch zip archive")
    refused(folder, "pickle_in_disguise")
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    refused(folder, "bad_safetensors")


def test_missing_files_are_refused(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a")
    (folder / "adapter_config.json").unlink()
    refused(folder, "missing_file")
    folder = write_adapter(tmp_path / "b")
    (folder / "adapter_model.safetensors").unlink()
    refused(folder, "missing_file")
    refused(tmp_path / "does-not-exist", "not_a_folder")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_non_finite_weights_are_refused(tmp_path: Path, bad: float, dtype: str) -> None:
    poisoned = np.zeros((4, 16), dtype=dtype)
    poisoned[2, 7] = bad
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"
    folder = write_adapter(tmp_path / "a", dtype=dtype, tensor_overrides={key: poisoned})
    assert key in refused(folder, "non_finite_weights").message


def test_bf16_nan_is_detected_from_raw_bits(tmp_path: Path) -> None:
    # bf16 tensors cannot be built in numpy: write the file by hand (0x7FC0 is a bf16 NaN, 0x3F80 is 1.0).
    folder = write_adapter(tmp_path / "a")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    for bits, ok in ((0x3F80, True), (0x7FC0, False)):
        raw = np.full((4, 16), 0x3F80, dtype="<u2")
        raw[0, 0] = bits
        header = json.dumps(
            {key: {"dtype": "BF16", "shape": [4, 16], "data_offsets": [0, raw.nbytes]}}
        ).encode()
        header += b" " * (-len(header) % 8)
        blob = struct.pack("<Q", len(header)) + header + raw.tobytes()
        (folder / "adapter_model.safetensors").write_bytes(blob)
        if ok:
            assert validate_adapter(folder, SPEC).rank == 4
        else:
            refused(folder, "non_finite_weights")


def test_rank_limits(tmp_path: Path) -> None:
    refused(write_adapter(tmp_path / "big", r=32), "rank_too_large")
    refused(write_adapter(tmp_path / "zero", r=4, config_overrides={"r": 0}), "invalid_rank")
    refused(write_adapter(tmp_path / "str", r=4, config_overrides={"r": "8"}), "invalid_rank")
    refused(
        write_adapter(tmp_path / "pattern", config_overrides={"rank_pattern": {"q_proj": 64}}),
        "rank_too_large",
    )
    # The config claims r=4 but the tensors carry rank 32: the tensors win.
    lying = write_adapter(tmp_path / "lying", r=32, config_overrides={"r": 4})
    refused(lying, "rank_too_large")


def test_unknown_target_modules_are_refused(tmp_path: Path) -> None:
    err = refused(write_adapter(tmp_path / "a", target_modules=("q_proj", "c_attn")), "unknown_target_module")
    assert "c_attn" in err.message
    # Config names known modules, but the tensors target one the base does not have.
    key = "base_model.model.model.layers.0.self_attn.query_key_value.lora_A.weight"
    folder = write_adapter(tmp_path / "b", tensor_overrides={key: np.zeros((4, 16), np.float32)})
    refused(folder, "unknown_target_module")
    regex = write_adapter(tmp_path / "c", config_overrides={"target_modules": r".*\.(q|v)_proj"})
    assert validate_adapter(regex, SPEC).target_modules == (r".*\.(q|v)_proj",)
    refused(
        write_adapter(tmp_path / "d", config_overrides={"target_modules": "wte"}), "unknown_target_module"
    )


def test_oversized_adapter_is_refused(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a", hidden=256, r=16, layers=4)  # ~256 KiB of weights
    small = BaseModelSpec.create(SPEC.model_id, SMOLLM2_MODULES, 16, max_size_bytes=64 * 1024)
    assert "limit" in refused(folder, "too_large", small).message
    assert validate_adapter(folder, SPEC).size_bytes > 64 * 1024


def test_config_problems(tmp_path: Path) -> None:
    refused(write_adapter(tmp_path / "ia3", config_overrides={"peft_type": "IA3"}), "unsupported_peft_type")
    refused(write_adapter(tmp_path / "dora", config_overrides={"use_dora": True}), "unsupported_feature")
    refused(
        write_adapter(tmp_path / "nobase", config_overrides={"base_model_name_or_path": None}), "bad_config"
    )
    folder = write_adapter(tmp_path / "json")
    (folder / "adapter_config.json").write_text("{not json")
    refused(folder, "bad_config")
    (folder / "adapter_config.json").write_text(json.dumps(["a", "list"]))
    refused(folder, "bad_config")


def test_symlinks_are_refused(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a")
    (tmp_path / "secret.txt").write_text("x")
    (folder / "README.md").symlink_to(tmp_path / "secret.txt")
    refused(folder, "symlink")


def test_safetensors_without_lora_tensors_is_refused(tmp_path: Path) -> None:
    folder = write_adapter(
        tmp_path / "a", layers=0, tensor_overrides={"lm_head.weight": np.zeros((2, 2), "f4")}
    )
    refused(folder, "bad_safetensors")


def test_spec_requires_modules() -> None:
    with pytest.raises(ValueError):
        BaseModelSpec.create("m", (), 8)


# ----------------------------------------------------------------------------- tensor shapes vs the base
# SmolLM2-135M shapes (serving.registry.testing): what a loadable adapter must match.
SHAPED = BaseModelSpec.create(
    SPEC.model_id, SMOLLM2_MODULES, 16, module_shapes=module_shapes_from_config(SMOLLM2_CONFIG)
)
ALL_MODULES = tuple(SMOLLM2_SHAPES)


def shaped_adapter(folder: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("target_modules", ALL_MODULES)
    return write_adapter(
        folder, layers=1, module_shapes={**SMOLLM2_SHAPES, **kwargs.pop("shapes", {})}, **kwargs
    )


def test_adapter_fitting_the_base_shapes_passes(tmp_path: Path) -> None:
    report = validate_adapter(shaped_adapter(tmp_path / "a"), SHAPED)
    assert "tensor_shapes" in report.checks and report.tensor_count == 14
    # The default test adapters (16 wide) still pass where the base's shapes are not known.
    assert validate_adapter(write_adapter(tmp_path / "b"), SPEC).rank == 4
    assert "does not fit" in refused(write_adapter(tmp_path / "c"), "shape_mismatch", SHAPED).message


@pytest.mark.parametrize(
    ("module", "shape", "words"),
    [
        ("q_proj", (512, 576), ["lora_A", "in_features 512", "576 input"]),  # lora_A of the wrong width
        ("o_proj", (576, 512), ["lora_B", "out_features 512", "576 output"]),  # lora_B of the wrong height
        ("k_proj", (576, 576), ["k_proj", "out_features 576", "192 output"]),  # heads, not kv heads
        ("v_proj", (192, 192), ["v_proj", "in_features 192", "576 input"]),
        ("gate_proj", (576, 2048), ["gate_proj", "out_features 2048", "1536 output"]),  # intermediate
        ("down_proj", (2048, 576), ["down_proj", "in_features 2048", "1536 input"]),
    ],
)
def test_each_shape_mismatch_is_refused(
    tmp_path: Path, module: str, shape: tuple[int, int], words: list[str]
) -> None:
    folder = shaped_adapter(tmp_path / "a", shapes={module: shape})
    message = refused(folder, "shape_mismatch", SHAPED).message
    assert all(w in message for w in words), message


def test_rank_and_structure_mismatches_are_refused(tmp_path: Path) -> None:
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    # lora_B carries another rank than lora_A
    b_rank = shaped_adapter(
        tmp_path / "b", tensor_overrides={f"{key}.lora_B.weight": np.zeros((576, 8), "f4")}
    )
    assert "rank 4" in refused(b_rank, "shape_mismatch", SHAPED).message
    # the tensors' rank is not the config's r
    lying = shaped_adapter(tmp_path / "r", r=4, config_overrides={"r": 8})
    assert "r = 8" in refused(lying, "shape_mismatch", SHAPED).message
    # ... unless a rank_pattern says ranks differ per module
    patterned = shaped_adapter(tmp_path / "p", r=4, config_overrides={"r": 8, "rank_pattern": {"q_proj": 4}})
    assert validate_adapter(patterned, SHAPED)
    # a matrix that is not 2-D
    flat = shaped_adapter(
        tmp_path / "f", tensor_overrides={f"{key}.lora_A.weight": np.zeros((4 * 576,), "f4")}
    )
    assert "2-D" in refused(flat, "shape_mismatch", SHAPED).message
    cube = shaped_adapter(
        tmp_path / "c", tensor_overrides={f"{key}.lora_A.weight": np.zeros((4, 576, 1), "f4")}
    )
    refused(cube, "shape_mismatch", SHAPED)
    # lora_A without its lora_B
    lone = write_adapter(
        tmp_path / "l",
        layers=0,
        tensor_overrides={f"{key}.lora_A.weight": np.zeros((4, 576), "f4")},
    )
    assert "no lora_B" in refused(lone, "bad_safetensors", SHAPED).message


def test_base_module_shapes_from_weights_or_config(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    weights = tmp_path / "weights"
    weights.mkdir()
    save_file(
        {
            "model.embed_tokens.weight": np.zeros((10, 4), "f4"),
            "model.layers.0.self_attn.q_proj.weight": np.zeros((4, 4), "f4"),
            "model.layers.0.self_attn.k_proj.weight": np.zeros((2, 4), "f4"),
            "model.layers.0.mlp.down_proj.weight": np.zeros((4, 8), "f4"),
            "model.layers.0.input_layernorm.weight": np.zeros((4,), "f4"),
        },
        str(weights / "model.safetensors"),
    )
    shapes = base_module_shapes(weights)
    assert shapes == {
        "embed_tokens": frozenset({(10, 4)}),
        "q_proj": frozenset({(4, 4)}),
        "k_proj": frozenset({(4, 2)}),
        "down_proj": frozenset({(8, 4)}),
    }
    configured = tmp_path / "config"
    configured.mkdir()
    (configured / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    derived = base_module_shapes(configured)
    assert derived["k_proj"] == frozenset({(576, 192)}) and derived["down_proj"] == frozenset({(1536, 576)})
    (configured / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert base_module_shapes(configured) == {}  # unknown: shapes are not checked
    assert module_shapes_from_config({"text_config": SMOLLM2_CONFIG})["q_proj"] == frozenset({(576, 576)})
