"""`tuneloop loop validate` and the loop command's argument checks (no service needed)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from tuneloop.commands.loop import register, spec_overrides


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    register(root)
    return root


def test_validate_a_good_spec_describes_what_the_loop_will_do(tmp_path: Path) -> None:
    spec = tmp_path / "loop.yaml"
    spec.write_text(
        yaml.safe_dump({"adapter": "triage", "suites": {"target": "general_qa"}, "policy": "production"})
    )
    result = CliRunner().invoke(app(), ["loop", "validate", str(spec)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "is a valid loop spec" in result.output
    assert "mmd (p <= 0.001, 2000 permutations)" in result.output
    assert "approval required" in result.output


def test_validate_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "loop.yaml"
    spec.write_text(yaml.safe_dump({"suites": {"target": "nope"}, "windws": {}}))
    result = CliRunner().invoke(app(), ["loop", "validate", str(spec)], terminal_width=200)
    assert result.exit_code == 2
    assert "3 problem(s)" in result.output
    assert "adapter: required key is missing" in result.output
    assert "did you mean 'windows'" in result.output


def test_validate_applies_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "loop.yaml"
    spec.write_text(yaml.safe_dump({"adapter": "a", "suites": {"target": "general_qa"}}))
    result = CliRunner().invoke(
        app(), ["loop", "validate", str(spec), "--set", "canary.weight=0.25"], terminal_width=200
    )
    assert result.exit_code == 0 and "canary: 25% of traffic" in result.output


def test_loop_without_a_spec_says_what_to_give() -> None:
    result = CliRunner().invoke(app(), ["loop"], terminal_width=200)
    assert result.exit_code == 2 and "tuneloop loop --spec loop.yaml" in result.output


def test_status_needs_exactly_one_of_spec_or_adapter() -> None:
    result = CliRunner().invoke(app(), ["status"], terminal_width=200)
    assert result.exit_code == 2 and "give --spec FILE or --adapter NAME" in result.output


def test_overrides_from_the_command_line() -> None:
    assert spec_overrides(["service_url=http://127.0.0.1:9", "canary.weight=0.2"], None) == {
        "service_url": "http://127.0.0.1:9",
        "canary.weight": 0.2,
    }
    assert spec_overrides(["service_url=http://a"], "http://b") == {"service_url": "http://b"}
    assert spec_overrides(None, None) == {}
