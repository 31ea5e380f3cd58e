"""`tuneloop train`: overrides, default base model, exit codes, the registration hook (recipe faked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from training_fakes import fake_run  # type: ignore[import-not-found]
from typer.testing import CliRunner

import training.dispatch as dispatch
from tuneloop.commands import train as train_cmd

runner = CliRunner()


def app() -> typer.Typer:
    root = typer.Typer()
    root.callback()(lambda: None)
    train_cmd.register(root)
    return root


def write_config(tmp_path: Path, fixtures_dir: Path, extra: str = "") -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "name: cli-test\n"
        f"data:\n  sources:\n    - path: {fixtures_dir / 'support_tiny.jsonl'}\n"
        f"output:\n  runs_dir: {tmp_path / 'runs'}\n" + extra
    )
    return path


def test_parse_overrides() -> None:
    assert train_cmd.parse_overrides(
        ["train.max_steps=5", "lora.target_modules=[q_proj, v_proj]", "x=null"]
    ) == {"train.max_steps": 5, "lora.target_modules": ["q_proj", "v_proj"], "x": None}
    with pytest.raises(typer.BadParameter):
        train_cmd.parse_overrides(["no-equals"])


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path, fixtures_dir: Path) -> None:
    cfg = write_config(tmp_path, fixtures_dir, "lora:\n  r: 0\n")
    result = runner.invoke(app(), ["train", str(cfg), "--no-ray", "--no-progress"])
    assert result.exit_code == 2
    assert "lora.r" in result.output


def test_register_without_registrar_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    train_cmd.set_registrar(None)
    result = runner.invoke(
        app(), ["train", str(write_config(tmp_path, fixtures_dir)), "--register", "x", "--no-ray"]
    )
    assert result.exit_code == 2 and "registrar" in result.output


def test_success_prints_the_adapter_and_registers(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "run_local", fake_run())
    calls: list[tuple[Path, str, dict[str, Any]]] = []

    def registrar(folder: Path, name: str, manifest: dict[str, Any]) -> str:
        calls.append((folder, name, manifest))
        return f"{name}@{manifest['adapter']['sha256'][:12]}"

    train_cmd.set_registrar(registrar)
    try:
        result = runner.invoke(
            app(),
            [
                "train",
                str(write_config(tmp_path, fixtures_dir)),
                "--no-ray",
                "--no-progress",
                "--register",
                "support",
                "--set",
                "train.max_steps=2",
            ],
        )
    finally:
        train_cmd.set_registrar(None)
    assert result.exit_code == 0, result.output
    adapter_dir = Path(result.stdout.strip().splitlines()[-1])
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert len(calls) == 1 and calls[0][0] == adapter_dir and calls[0][1] == "support"
    assert calls[0][2]["config"]["train"]["max_steps"] == 2
    assert calls[0][2]["base_model"]["id"] == "SmolLM2-135M-Instruct"  # the default model was filled in
