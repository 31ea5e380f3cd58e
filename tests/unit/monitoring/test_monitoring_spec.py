"""The loop spec: validated before anything starts, every problem at once with its field path and a hint;
relative paths against the spec's folder; shipped names for suites and policies; no demo defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitoring.spec import DEFAULT_RECIPE, SpecError, load_spec, parse_spec

MINIMAL = {"adapter": "triage", "suites": {"target": "general_qa"}}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_minimal_spec_has_no_demo_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.adapter == "triage" and spec.slice_key is None
    assert spec.suites.names() == ["general_qa"]
    assert spec.recipe.training == DEFAULT_RECIPE
    assert "support" not in yaml.safe_dump(spec.model_dump(mode="json"))


def test_every_problem_is_listed_at_once_with_paths_and_hints() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(
            {
                "suites": {"target": "general_q"},
                "policy": "defualt",
                "canery": {"weight": 0.2},
                "windows": {"live_size": 3},
            }
        )
    problems = caught.value.problems
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "adapter: required key is missing" in text
    assert "suites.target: no shipped suite named 'general_q' (did you mean 'general_qa'?)" in text
    assert "policy: no shipped policy named 'defualt' (did you mean 'default'?)" in text
    assert "canery: Extra inputs are not permitted" in text and "did you mean 'canary'" in text
    assert "windows.live_size" in text


def test_paths_resolve_against_the_spec_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    suite = project / "suites" / "target.yaml"
    write(suite, {"name": "t"})
    write(project / "recipe.yaml", {"train": {"epochs": 1}, "output": {"runs_dir": "runs"}})
    (project / "data").mkdir()
    (project / "data" / "train.jsonl").write_text("{}\n")
    write(project / "policy.yaml", {"name": "mine", "cooldown_minutes": 5})
    spec_file = write(
        project / "loop.yaml",
        {
            "adapter": "triage",
            "suites": {"target": "./suites/target.yaml", "regression": "general_qa"},
            "recipe": {"training": "recipe.yaml", "replay": "data/train.jsonl"},
            "policy": "./policy.yaml",
            "state_dir": "state",
        },
    )
    monkeypatch.chdir(tmp_path)  # somewhere else: nothing may resolve against the working directory
    spec = load_spec(spec_file)
    assert spec.suites.target == str(suite.resolve())
    assert spec.suites.regression == "general_qa"
    assert spec.recipe.replay == (project / "data" / "train.jsonl").resolve()
    assert spec.policy.name == "mine" and spec.policy.cooldown_minutes == 5
    assert spec.resolved_state_dir() == (project / "state").resolve()
    template = spec.recipe.template()
    assert template["output"]["runs_dir"] == str((project / "runs").resolve())


def test_missing_files_are_named(tmp_path: Path) -> None:
    spec_file = write(
        tmp_path / "loop.yaml",
        {"adapter": "a", "suites": {"target": "./nope.yaml"}, "recipe": {"training": "./r.yaml"}},
    )
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file)
    text = "\n".join(caught.value.problems)
    assert f"suites.target: suite file not found: {tmp_path / 'nope.yaml'}" in text
    assert f"recipe.training: training recipe file not found: {tmp_path / 'r.yaml'}" in text


def test_a_suite_is_required_and_scorers_are_checked() -> None:
    with pytest.raises(SpecError, match="suites: name a target suite, a regression suite, or both"):
        parse_spec({"adapter": "a", "suites": {}})
    with pytest.raises(SpecError, match="scorers"):
        parse_spec({**MINIMAL, "scorers": ["feedbak"]})
    with pytest.raises(SpecError, match="quality_scorer 'judge' is not one of the configured scorers"):
        parse_spec({**MINIMAL, "quality_scorer": "judge"})


def test_a_policy_that_cannot_fire_is_refused() -> None:
    with pytest.raises(SpecError, match="cannot reach p <= 1e-07"):
        parse_spec({**MINIMAL, "policy": {"input_drift": {"max_p_value": 1e-7}}})


def test_overrides_and_state_dir_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    spec_file = write(tmp_path / "loop.yaml", MINIMAL)
    spec = load_spec(spec_file, overrides={"canary.weight": 0.2, "windows.live_size": 50})
    assert spec.canary.weight == 0.2 and spec.windows.live_size == 50
    assert spec.resolved_state_dir() == tmp_path / "home" / "loop" / "triage"


def test_shipped_specs_validate() -> None:
    root = Path(__file__).resolve().parents[3]
    demo = load_spec(root / "tuneloop" / "demo_loop.yaml")
    assert demo.policy.name == "demo" and demo.slice_key == "intent"
    for spec_file in sorted((root / "examples").glob("*/loop.yaml")):
        assert load_spec(spec_file).adapter
