"""Tests for serving.models: default-model bootstrap, base-model resolution, fingerprint, module names."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from serving import models
from serving.models import (
    DEFAULT_MODEL_ID,
    READY_MARKER,
    base_model_fingerprint,
    base_model_module_names,
    default_gguf_path,
    prepare_default_model,
    resolve_base_model,
    tuneloop_home,
)


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The real prepared default model (converted once per machine; instant when already prepared)."""
    return prepare_default_model()


def _write_safetensors_header(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file with the given tensor shapes (fp32 zeros)."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def _fake_convert(calls: list[Path]) -> Callable[[Path, Path], None]:
    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"model_type": "llama", "build": len(calls)}))
        (out / READY_MARKER).write_text("{}")

    return convert


def test_prepared_default_model_answers_paris(default_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert default_model.name == DEFAULT_MODEL_ID
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        READY_MARKER,
    ):
        assert (default_model / name).is_file(), name
    config = json.loads((default_model / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"

    tokenizer = AutoTokenizer.from_pretrained(default_model)
    model: Any = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert str(chat).endswith("<|im_start|>assistant\n")

    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :])
    assert "Paris" in answer


def test_prepare_is_idempotent_for_the_real_model(default_model: Path) -> None:
    marker_mtime = (default_model / READY_MARKER).stat().st_mtime_ns
    assert prepare_default_model() == default_model
    assert (default_model / READY_MARKER).stat().st_mtime_ns == marker_mtime


def test_default_gguf_is_found_without_importing_the_package() -> None:
    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_tuneloop_home_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    assert tuneloop_home() == tmp_path / "home"
    monkeypatch.delenv("TUNELOOP_HOME")
    assert tuneloop_home() == Path.home() / ".cache" / "tuneloop"


def test_prepare_builds_once_and_rebuilds_on_force(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert_gguf_to_safetensors", _fake_convert(calls))
    target = prepare_default_model(cache_dir=tmp_path)
    assert target == tmp_path / DEFAULT_MODEL_ID
    assert prepare_default_model(cache_dir=tmp_path) == target
    assert len(calls) == 1
    # Built in a temp folder beside the target, then renamed into place; nothing else is left behind.
    assert calls[0].parent == tmp_path and calls[0] != target
    prepare_default_model(cache_dir=tmp_path, force=True)
    assert len(calls) == 2
    assert json.loads((target / "config.json").read_text())["build"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [DEFAULT_MODEL_ID]


def test_half_built_folder_is_never_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert_gguf_to_safetensors", _fake_convert(calls))
    half = tmp_path / DEFAULT_MODEL_ID
    half.mkdir()
    (half / "config.json").write_text("{}")  # no ready marker: an interrupted build
    assert prepare_default_model(cache_dir=tmp_path) == half
    assert len(calls) == 1
    assert (half / READY_MARKER).is_file()


def test_failed_conversion_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert_gguf_to_safetensors", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_default_model(cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_resolve_base_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    monkeypatch.setattr(models, "prepare_default_model", lambda: prepared)
    for spec in (None, "default", "SmolLM2-135M-Instruct", "smollm2-135m-instruct"):
        assert resolve_base_model(spec) == prepared

    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    assert resolve_base_model(str(local)) == local.resolve()

    with pytest.raises(ValueError, match="meta-llama/Llama-3.1-8B"):
        resolve_base_model("meta-llama/Llama-3.1-8B")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="config.json"):
        resolve_base_model(str(empty))


def test_fingerprint_changes_with_config_and_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1}')
    _write_safetensors_header(tmp_path / "model.safetensors", {"x.weight": [2, 2]})
    first = base_model_fingerprint(tmp_path)
    assert len(first) == 64 and first == base_model_fingerprint(tmp_path)
    _write_safetensors_header(tmp_path / "model.safetensors", {"x.weight": [4, 4]})
    second = base_model_fingerprint(tmp_path)
    assert second != first
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert base_model_fingerprint(tmp_path) != second
    with pytest.raises(ValueError, match="config.json"):
        base_model_fingerprint(tmp_path / "missing")


def test_module_names_from_safetensors_headers(tmp_path: Path) -> None:
    _write_safetensors_header(
        tmp_path / "model.safetensors",
        {
            "model.embed_tokens.weight": [10, 4],
            "model.layers.0.self_attn.q_proj.weight": [4, 4],
            "model.layers.0.mlp.down_proj.weight": [4, 8],
            "model.layers.0.input_layernorm.weight": [4],
            "model.layers.0.self_attn.q_proj.bias": [4],
        },
    )
    assert base_model_module_names(tmp_path) == {
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.mlp.down_proj",
    }
    with pytest.raises(ValueError, match="safetensors"):
        base_model_module_names(tmp_path / "nothing-here")


def test_module_names_of_the_default_model(default_model: Path) -> None:
    names = base_model_module_names(default_model)
    short = {name.rsplit(".", 1)[-1] for name in names}
    assert short == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(names) == 30 * 7
