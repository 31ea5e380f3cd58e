"""common.settings: the one way configs load - every problem at once with its key, "did you mean" hints,
paths relative to the file, dotted overrides (list items too), and clear file errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Discriminator, Field, Tag

from common.settings import (
    ConfigModel,
    ConfigPath,
    SettingsError,
    apply_overrides,
    load_config_file,
    read_yaml_mapping,
    validate_config,
)


class Engine(ConfigModel):
    max_loras: int = Field(default=4, ge=1)
    """Adapters resident at once."""


class FileItem(ConfigModel):
    kind: Literal["file"] = "file"
    path: ConfigPath
    """A file, relative to the settings file."""


class UrlItem(ConfigModel):
    kind: Literal["url"] = "url"
    url: str


def _kind(value: object) -> str:
    return str(value.get("kind", "file")) if isinstance(value, dict) else str(getattr(value, "kind", "file"))


Item = Annotated[
    Annotated[FileItem, Tag("file")] | Annotated[UrlItem, Tag("url")],
    Discriminator(_kind),
]


class Root(ConfigModel):
    name: str
    port: int = Field(default=8000, ge=1, le=65535)
    engine: Engine = Field(default_factory=Engine)
    items: list[Item] = Field(default_factory=list)
    out: ConfigPath | None = None


class Wrapped(Exception):
    """A package's own error type, built from the message."""


def test_every_problem_is_listed_at_once_with_its_field_path() -> None:
    with pytest.raises(SettingsError) as info:
        validate_config(Root, {"port": 70000, "engine": {"max_loras": 0}, "colour": "red"}, what="things")
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert any(p.startswith("name: required key is missing") for p in problems)
    assert any(p.startswith("port: ") and "65535" in p for p in problems)
    assert any(p.startswith("engine.max_loras: ") for p in problems)
    assert any(p.startswith("colour: Extra inputs are not permitted: unknown key 'colour'") for p in problems)
    message = str(info.value)
    assert message.startswith("invalid things: \n")
    assert all(p in message for p in problems)


def test_one_problem_stays_on_one_line() -> None:
    with pytest.raises(SettingsError, match=r"^invalid things: port: ") as info:
        validate_config(Root, {"name": "x", "port": 0}, what="things")
    assert "\n" not in str(info.value)


def test_typo_gets_did_you_mean_and_the_allowed_keys() -> None:
    with pytest.raises(SettingsError) as info:
        validate_config(Root, {"name": "x", "engine": {"max_lora": 2}})
    (problem,) = info.value.problems
    assert problem.startswith("engine.max_lora: ")
    assert "did you mean 'max_loras'?" in problem
    assert "allowed here: max_loras" in problem


def test_typo_inside_a_union_member_names_that_member_keys() -> None:
    data = {"name": "x", "items": [{"path": "a"}, {"kind": "url", "url": "u", "pth": "b"}]}
    with pytest.raises(SettingsError) as info:
        validate_config(Root, data)
    (problem,) = info.value.problems
    assert problem.startswith("items.1.pth: "), problem  # the union tag is not part of the key
    assert "allowed here: kind, url" in problem  # the url member's keys, not the file member's


def test_config_path_resolves_against_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    file = folder / "s.yaml"
    file.write_text("name: x\nitems:\n  - path: data/a.jsonl\n  - path: /abs/b.jsonl\nout: ~/runs\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaded = load_config_file(Root, file)
    first, second = loaded.items
    assert isinstance(first, FileItem) and isinstance(second, FileItem)
    assert first.path == folder / "data" / "a.jsonl"
    assert second.path == Path("/abs/b.jsonl")
    assert loaded.out == tmp_path / "home" / "runs"
    # validated without a folder, a relative path stays relative; with one, it is joined to it
    assert validate_config(Root, {"name": "x", "out": "o"}).out == Path("o")
    assert validate_config(Root, {"name": "x", "out": "o"}, base_dir=tmp_path).out == tmp_path / "o"


def test_dotted_overrides_reach_sections_and_list_items(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("name: x\nitems:\n  - path: a\n  - kind: url\n    url: u\n")
    loaded = load_config_file(
        Root,
        file,
        overrides={"engine.max_loras": 8, "items.0.path": "b", "items.1.url": "v", "port": None},
    )
    assert loaded.engine.max_loras == 8 and loaded.port == 8000
    assert isinstance(loaded.items[0], FileItem) and loaded.items[0].path == tmp_path / "b"
    assert isinstance(loaded.items[1], UrlItem) and loaded.items[1].url == "v"
    data: dict[str, object] = {"a": None, "items": [{"x": 1}]}
    apply_overrides(data, {"a.b.c": 1, "items.0": {"y": 2}})
    assert data == {"a": {"b": {"c": 1}}, "items": [{"y": 2}]}


def test_bad_overrides_name_the_key() -> None:
    with pytest.raises(SettingsError, match=r"cannot override 'items\.5\.path': no list item 5"):
        apply_overrides({"items": [{}]}, {"items.5.path": "x"})
    with pytest.raises(SettingsError, match=r"cannot override 'name\.first\.x': 'name' is not a section"):
        apply_overrides({"name": "x", "first": 1}, {"name.first.x": 1})
    with pytest.raises(Wrapped, match="no list item x"):
        apply_overrides({"items": []}, {"items.x.y": 1}, error=Wrapped)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(SettingsError, match=r"things file not found: .*missing\.yaml"):
        read_yaml_mapping(missing, what="things")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SettingsError, match=r"bad\.yaml is not UTF-8 text"):
        load_config_file(Root, bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match=r"bad\.yaml: the top level must be a mapping of things keys"):
        read_yaml_mapping(bad, what="things")
    bad.write_text("a: [\n")
    with pytest.raises(SettingsError, match=r"bad\.yaml is not valid YAML"):
        read_yaml_mapping(bad)
    bad.write_text("")
    assert read_yaml_mapping(bad) == {}
    with pytest.raises(SettingsError, match="must be a mapping of keys, got list"):
        validate_config(Root, [1, 2])


def test_package_errors_are_raised_through_error() -> None:
    class PackageError(SettingsError):
        pass

    with pytest.raises(Wrapped, match="invalid suite: name: required key is missing"):
        validate_config(Root, {}, what="suite", error=Wrapped)
    with pytest.raises(PackageError) as info:
        validate_config(Root, {"port": 0}, error=PackageError)
    assert len(info.value.problems) == 2  # a SettingsError subclass gets the problem list too


def test_attribute_docstrings_document_fields() -> None:
    assert Engine.model_fields["max_loras"].description == "Adapters resident at once."
