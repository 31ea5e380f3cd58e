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


def test_every_bad_setting_is_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "tl.yaml"
    f.write_text(
        yaml.safe_dump(
            {"port": 0, "serving": {"num_replica": 2, "engine": {"max_loras": 0}}, "hots": "0.0.0.0"}
        )
    )
    with pytest.raises(SettingsError) as info:
        load_settings(f)
    problems = info.value.problems
    assert len(problems) == 4, problems
    keys = {p.split(":", 1)[0] for p in problems}
    assert keys == {"port", "serving.num_replica", "serving.engine.max_loras", "hots"}
    assert any("did you mean 'num_replicas'" in p for p in problems)
    assert any("did you mean 'host'" in p for p in problems)
    assert all(p in str(info.value) for p in problems)


def test_settings_overrides_use_the_shared_dotted_syntax(tmp_path: Path) -> None:
    s = load_settings(None, {"serving.engine.max_loras": 2, "serving.api_keys": ["k1"]})
    assert s.serving.engine.max_loras == 2 and s.serving.api_keys == ["k1"]
    with pytest.raises(SettingsError, match=r"cannot override 'host\.x': 'host' is not a section"):
        load_settings(None, {"host": "h", "host.x": 1})


def test_settings_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "tl.yaml"
    f.write_bytes(b"host: \xff\n")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(f)
    f.write_text("- a\n")
    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(f)
    f.write_text("")
    assert load_settings(f).port == 8000  # an empty file is the defaults
