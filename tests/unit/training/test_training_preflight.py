"""Preflight rejects bad inputs in well under a second, before any weights load: missing base model,
unknown target modules, a parent adapter for another base, device/optimizer mismatches, bad data sources,
a full disk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from training.errors import ConfigError, DataError, OutOfDiskError
from training.preflight import base_model_fingerprint, linear_module_names, preflight


def fake_adapter(
    folder: Path, base: str, manifest_fp: str | None = None, targets: list[str] | None = None
) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": 8,
                "lora_alpha": 16,
                "base_model_name_or_path": base,
                "target_modules": targets or ["q_proj", "v_proj"],
            }
        )
    )
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    if manifest_fp is not None:
        (folder / "tuneloop_manifest.json").write_text(
            json.dumps({"name": "p", "base_model": {"fingerprint": manifest_fp}})
        )
    return folder


def test_good_config_passes_fast(make_config: Any, base_model: Path) -> None:
    start = time.perf_counter()
    checked = preflight(make_config())
    assert time.perf_counter() - start < 5
    assert checked.base_fingerprint == base_model_fingerprint(base_model)
    assert any(m.endswith("self_attn.q_proj") for m in checked.module_names)
    assert checked.parent is None


def test_fingerprint_matches_the_serving_definition(base_model: Path) -> None:
    from serving.models import base_model_fingerprint as serving_fingerprint

    assert base_model_fingerprint(base_model) == serving_fingerprint(base_model)
    assert "model.layers.0.mlp.down_proj" in linear_module_names(base_model)


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        ({"base_model": "/nonexistent/model"}, ConfigError, "base_model: base model folder does not exist"),
        (
            {"lora": {"target_modules": ["q_proj", "qkv_proj"]}},
            ConfigError,
            "'qkv_proj' is not a linear module",
        ),
        ({"lora": {"target_modules": ["lm_head"]}}, ConfigError, "lora.target_modules"),
        (
            {"train": {"optimizer": "paged_adamw_8bit"}},
            ConfigError,
            "train.optimizer: 'paged_adamw_8bit' needs CUDA",
        ),
        ({"runtime": {"device": "cuda"}}, ConfigError, "runtime.device"),
    ],
)
def test_bad_config_values(make_config: Any, change: dict, error: type[Exception], needle: str) -> None:
    with pytest.raises(error) as info:
        preflight(make_config(**change))
    assert needle in str(info.value)


def test_base_model_folder_without_config(make_config: Any, tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        preflight(make_config(base_model=str(tmp_path / "empty-model")))


def test_parent_adapter_for_another_base(make_config: Any, tmp_path: Path) -> None:
    by_name = fake_adapter(tmp_path / "gpt2-adapter", base="openai-community/gpt2")
    with pytest.raises(
        ConfigError, match="init_adapter: adapter .* was trained on base model 'openai-community/gpt2'"
    ):
        preflight(make_config(style="sequential", init_adapter=str(by_name)))
    by_fp = fake_adapter(tmp_path / "other-fp", base="SmolLM2-135M-Instruct", manifest_fp="ab" * 32)
    with pytest.raises(ConfigError, match="trained on another base model"):
        preflight(make_config(style="transfer", init_adapter=str(by_fp)))


def test_parent_adapter_for_this_base(make_config: Any, tmp_path: Path, base_model: Path) -> None:
    ok = fake_adapter(tmp_path / "ok", base=str(base_model), manifest_fp=base_model_fingerprint(base_model))
    checked = preflight(make_config(style="sequential", init_adapter=str(ok)))
    assert checked.parent is not None and checked.parent.r == 8 and len(checked.parent.sha256) == 64


def test_parent_adapter_missing_or_not_an_adapter(make_config: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adapter folder does not exist"):
        preflight(make_config(style="sequential", init_adapter=str(tmp_path / "nope")))
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        preflight(make_config(style="sequential", init_adapter=str(tmp_path / "plain")))


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"path": "missing.jsonl"}, "dataset file not found"),
        ({"path": "empty.jsonl"}, "dataset file is empty"),
        ({"path": "latin1.csv"}, "not valid UTF-8"),
        ({"path": "wrong_columns.jsonl", "template": "summarization"}, "column 'document'"),
        ({"path": "wrong_columns.jsonl"}, "cannot pick a template"),
    ],
)
def test_bad_sources(make_config: Any, fixtures_dir: Path, source: dict, needle: str) -> None:
    source = {**source, "path": str(fixtures_dir / source["path"])}
    with pytest.raises(DataError) as info:
        preflight(make_config([source]))
    assert needle in str(info.value) and "data.sources.0" in str(info.value)


def test_full_disk(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OutOfDiskError, match="MiB free"):
        preflight(make_config())
