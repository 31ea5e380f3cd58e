"""Artifacts: adapter verification (only PEFT files, parseable, finite), atomic commit / discard, disk
errors mapped to OutOfDiskError, code version info."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training.artifacts import (
    begin_run,
    code_version,
    commit_run,
    discard_run,
    new_run_id,
    run_paths,
    verify_adapter,
    write_bytes,
)
from training.errors import ArtifactError, OutOfDiskError


def adapter(folder: Path, value: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    save_file(
        {"m.q_proj.lora_A.weight": torch.full((2, 8), value), "m.q_proj.lora_B.weight": torch.zeros(8, 2)},
        str(folder / "adapter_model.safetensors"),
    )
    return folder


def test_verify_accepts_a_clean_adapter(tmp_path: Path) -> None:
    sizes = verify_adapter(adapter(tmp_path / "a"))
    assert set(sizes) == {"adapter_config.json", "adapter_model.safetensors"}


def test_verify_rejects_pickles_nan_and_missing(tmp_path: Path) -> None:
    folder = adapter(tmp_path / "a")
    (folder / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(ArtifactError, match="unexpected files.*optimizer.pt"):
        verify_adapter(folder)
    with pytest.raises(ArtifactError, match="NaN"):
        verify_adapter(adapter(tmp_path / "b", value=float("nan")))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "adapter_config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="lacks"):
        verify_adapter(tmp_path / "c")


def test_commit_is_one_rename_and_discard_cleans(tmp_path: Path) -> None:
    run_id = new_run_id("demo")
    paths = run_paths(tmp_path / "runs", "demo", run_id)
    begin_run(paths)
    adapter(paths.tmp_dir / "adapter")
    final = commit_run(paths)
    assert final == tmp_path / "runs" / run_id and (final / "adapter" / "adapter_model.safetensors").is_file()
    assert not paths.tmp_dir.exists()
    with pytest.raises(ArtifactError, match="already exists"):
        begin_run(paths) or commit_run(paths)
    other = run_paths(tmp_path / "runs", "demo", new_run_id("demo"))
    begin_run(other)
    discard_run(other)
    assert not other.tmp_dir.exists() and not other.final_dir.exists()


def test_write_bytes_maps_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutOfDiskError, match="out of disk space while writing"):
        write_bytes(tmp_path / "x.bin", b"data")


def test_code_version_lists_packages() -> None:
    info = code_version()
    assert "git_sha" in info and {"torch", "transformers", "peft", "trl"} <= set(info["packages"])
