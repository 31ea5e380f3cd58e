"""Settings and deploy configs are validated before anything starts; errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serving.config import ServingConfig
from tuneloop.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["serve.yaml", "serve-gpu.yaml"])
def test_deploy_serve_configs_are_valid(name: str) -> None:
    config = yaml.safe_load((ROOT / "deploy" / name).read_text())
    apps = config["applications"]
    assert apps and all(app["import_path"] == "serving.app:build_app" for app in apps)
    for app in apps:
        ServingConfig.model_validate(app["args"])


def test_settings_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "tl.yaml"
    f.write_text(yaml.safe_dump({"serving": {"num_replicas": 2, "engine": {"max_loras": 8}}, "port": 9000}))
    s = load_settings(f, {"serving.num_replicas": 3, "host": None})
    assert s.serving.num_replicas == 3 and s.serving.engine.max_loras == 8 and s.port == 9000


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"serving": {"nope": 1}}, "serving.nope"),
        ({"serving": {"engine": {"max_loras": 0}}}, "serving.engine.max_loras"),
        ({"port": 70000}, "port"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, data: dict[str, object], key: str) -> None:
    f = tmp_path / "tl.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(f)


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
