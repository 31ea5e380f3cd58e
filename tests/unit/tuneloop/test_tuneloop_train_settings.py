"""`tuneloop train --register NAME --config SETTINGS`: the settings file is checked before training, gives
the default base model, and is the one the registrar opens the registry from."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tuneloop.commands import train as train_cmd

runner = CliRunner()


def app() -> typer.Typer:
    root = typer.Typer()
    root.callback()(lambda: None)
    train_cmd.register(root)
    return root


@pytest.fixture
def fake_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """training.api.train and serving.models.resolve_base_model replaced; records what they were given."""
    seen: dict[str, Any] = {}
    adapter = tmp_path / "adapter"

    def train(config: Path, **kwargs: Any) -> Any:
        seen["overrides"] = kwargs["overrides"]
        return SimpleNamespace(
            ok=True,
            status="succeeded",
            error=None,
            metrics={"steps": 1, "train_loss_first": 2.0, "train_loss_last": 1.0},
            duration_s=1.0,
            device="cpu",
            adapter_dir=adapter,
            manifest={"config": {}},
            to_dict=lambda: {},
        )

    monkeypatch.setattr("training.api.train", train)
    monkeypatch.setattr(
        "serving.models.resolve_base_model", lambda spec=None: Path(f"/models/{spec or 'default'}")
    )
    monkeypatch.delenv("TUNELOOP_CONFIG", raising=False)
    return seen


def _registrar(calls: list[dict[str, Any]]) -> train_cmd.RegisterFn:
    def register(folder: Path, name: str, manifest: dict[str, Any]) -> str:
        calls.append({"folder": folder, "name": name, "env": os.environ.get("TUNELOOP_CONFIG")})
        return f"{name}@abc"

    return register


def test_register_uses_the_settings_file(fake_training: dict[str, Any], tmp_path: Path) -> None:
    settings = tmp_path / "tl.yaml"
    settings.write_text(yaml.safe_dump({"serving": {"base_model": "my-base", "home": str(tmp_path)}}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: x\ndata:\n  sources:\n    - path: d.jsonl\n")
    calls: list[dict[str, Any]] = []
    train_cmd.set_registrar(_registrar(calls))
    try:
        args = ["train", str(cfg), "--register", "support", "--config", str(settings), "--no-progress"]
        result = runner.invoke(app(), args)
    finally:
        train_cmd.set_registrar(None)
    assert result.exit_code == 0, result.output
    assert "registered support@abc" in result.output
    assert calls == [{"folder": tmp_path / "adapter", "name": "support", "env": str(settings.resolve())}]
    assert "TUNELOOP_CONFIG" not in os.environ  # set for the registrar only
    assert fake_training["overrides"]["base_model"] == "/models/my-base"  # the registry's base model


def test_the_training_config_base_model_wins_over_the_settings(
    fake_training: dict[str, Any], tmp_path: Path
) -> None:
    settings = tmp_path / "tl.yaml"
    settings.write_text(yaml.safe_dump({"serving": {"base_model": "my-base"}}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: x\nbase_model: default\ndata:\n  sources:\n    - path: d.jsonl\n")
    result = runner.invoke(app(), ["train", str(cfg), "--config", str(settings), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert fake_training["overrides"]["base_model"] == "/models/default"


def test_broken_settings_fail_before_training(fake_training: dict[str, Any], tmp_path: Path) -> None:
    settings = tmp_path / "tl.yaml"
    settings.write_text("serving:\n  num_replica: 2\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: x\ndata:\n  sources:\n    - path: d.jsonl\n")
    train_cmd.set_registrar(_registrar([]))
    try:
        args = ["train", str(cfg), "--register", "support", "--config", str(settings)]
        result = runner.invoke(app(), args)
        missing = runner.invoke(app(), [*args[:-1], str(tmp_path / "nope.yaml")])
    finally:
        train_cmd.set_registrar(None)
    assert result.exit_code == 2 and "serving.num_replica" in result.output
    assert missing.exit_code == 2 and "not found" in missing.output
    assert "overrides" not in fake_training  # training never started
