"""`tuneloop eval ...` and `tuneloop ab ...` end to end against a local fake endpoint and a SQLite log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from evals.datasets.request_log import SyntheticArm, write_synthetic_experiment
from tuneloop.commands.eval import register

FIXTURE_SUITE = str(Path(__file__).parents[2] / "fixtures" / "evals" / "capitals_format.yaml")
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Kenya": "Nairobi", "Peru": "Lima"}


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        pass

    register(root)
    return root


def answer(model: str, messages: list[dict[str, str]]) -> str:
    for country, capital in CAPITALS.items():
        if country in messages[-1]["content"]:
            return capital if model == "good" or country == "France" else "unsure"
    return "?"


def test_eval_run_compare_and_report(fake_openai_server: Any, tmp_path: Path) -> None:
    url, fake = fake_openai_server
    fake.answer = answer
    runner = CliRunner()
    for model in ("champ", "good"):
        result = runner.invoke(
            app(),
            ["eval", FIXTURE_SUITE, "--model", model, "--base-url", url, "--out", str(tmp_path / "runs")],
        )
        assert result.exit_code == 0, result.output
        assert "exact_match" in result.output
    champ = tmp_path / "runs" / "capitals_format__champ__0shot"
    good = tmp_path / "runs" / "capitals_format__good__0shot"
    assert (good / "report" / "report.html").is_file()
    compare = [
        "eval",
        "compare",
        "--champion",
        str(champ),
        "--challenger",
        str(good),
        "--target",
        "capitals_format",
        "--min-pairs",
        "3",
        "--out",
        str(tmp_path / "gate"),
        "--json",
        str(tmp_path / "gate.json"),
    ]
    result = runner.invoke(app(), compare)
    # 1 of 5 vs 5 of 5 on 5 examples: the CI still includes small gains, so the gate reports its evidence.
    decision = json.loads((tmp_path / "gate.json").read_text())
    assert result.exit_code == (0 if decision["passed"] else 1), result.output
    assert (tmp_path / "gate" / "report.html").is_file()
    reverse = runner.invoke(
        app(),
        [
            "eval",
            "compare",
            "--champion",
            str(good),
            "--challenger",
            str(champ),
            "--target",
            "capitals_format",
            "--min-pairs",
            "3",
        ],
    )
    assert reverse.exit_code == 1
    assert "FAIL" in reverse.output
    side = runner.invoke(app(), ["eval", "report", str(champ), str(good), "--out", str(tmp_path / "side")])
    assert side.exit_code == 0, side.output
    assert json.loads((tmp_path / "side" / "report.json").read_text())["comparisons"]


def test_eval_bad_input_exit_codes(fake_openai_server: Any, tmp_path: Path) -> None:
    url, fake = fake_openai_server
    runner = CliRunner()
    missing = runner.invoke(app(), ["eval", "no_such_suite", "--model", "m", "--base-url", url])
    assert missing.exit_code == 2
    assert "not found" in missing.output
    down = runner.invoke(
        app(),
        [
            "eval",
            FIXTURE_SUITE,
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--out",
            str(tmp_path),
        ],
    )
    assert down.exit_code == 1
    assert "unreachable" in down.output and "run the same command again to resume" in down.output
    not_a_run = runner.invoke(
        app(), ["eval", "compare", "--champion", str(tmp_path), "--challenger", str(tmp_path)]
    )
    assert not_a_run.exit_code == 2 and "not a finished eval run" in not_a_run.output


def test_eval_list_and_baseline(fake_openai_server: Any, tmp_path: Path) -> None:
    url, fake = fake_openai_server
    fake.answer = answer
    runner = CliRunner()
    listing = runner.invoke(app(), ["eval", "list"])
    assert listing.exit_code == 0 and "support_target" in listing.output and "pass_at_1" in listing.output
    result = runner.invoke(
        app(),
        [
            "eval",
            "baseline",
            FIXTURE_SUITE,
            "--model",
            "good",
            "--base-model",
            "champ",
            "-k",
            "2",
            "--base-url",
            url,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "capitals_format__baseline_report" / "report.json").read_text())
    assert [r["label"] for r in data["runs"]] == ["champ", "champ (2-shot)", "good"]


def test_ab_report_and_sample_size(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    engine = sa.create_engine(db)
    write_synthetic_experiment(
        engine, "exp", [SyntheticArm("champion"), SyntheticArm("challenger", score_mean=0.8)], 800
    )
    write_synthetic_experiment(engine, "solo", [SyntheticArm("champion")], 30)
    runner = CliRunner()
    result = runner.invoke(app(), ["ab", "report", "exp", "--db", db, "--out", str(tmp_path / "ab")])
    assert result.exit_code == 0, result.output
    assert "treatment better" in result.output and (tmp_path / "ab" / "report.html").is_file()
    as_json = runner.invoke(app(), ["ab", "report", "exp", "--db", db, "--json"])
    assert json.loads(as_json.stdout)["experiment"] == "exp"
    solo = runner.invoke(app(), ["ab", "report", "solo", "--db", db])
    assert solo.exit_code == 1 and "only arm 'champion'" in solo.output
    none = runner.invoke(app(), ["ab", "report", "ghost", "--db", db])
    assert none.exit_code == 2 and "no requests in the log" in none.output
    bad_weights = runner.invoke(app(), ["ab", "report", "exp", "--db", db, "--weights", "champion"])
    assert bad_weights.exit_code == 2
    size = runner.invoke(app(), ["ab", "sample-size", "--rate", "0.1", "--mde", "0.02"])
    assert size.exit_code == 0 and 3700 < json.loads(size.stdout)["n_control"] < 3900
    both = runner.invoke(app(), ["ab", "sample-size", "--mde", "0.02"])
    assert both.exit_code == 2


def test_eval_list_a_folder_of_suites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "capitals.yaml").write_text(
        Path(FIXTURE_SUITE)
        .read_text(encoding="utf-8")
        .replace("path: ", f"path: {Path(FIXTURE_SUITE).parent}/", 1),
        encoding="utf-8",
    )
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    listing = runner.invoke(app(), ["eval", "list", "--dir", "suites"], terminal_width=200)
    assert listing.exit_code == 0, listing.output
    assert "support_target" in listing.output  # the shipped ones as well
    assert "Suites in suites" in listing.output and "capitals_format" in listing.output
    (suites / "broken.yaml").write_text("name: broken\ntask: chat_qa\n", encoding="utf-8")
    broken = runner.invoke(app(), ["eval", "list", "--dir", "suites"], terminal_width=200)
    assert broken.exit_code == 2 and "1 suite(s) failed to load" in broken.output
    assert "broken.yaml" in broken.output and "dataset" in broken.output
    missing = runner.invoke(app(), ["eval", "list", "--dir", "nowhere"])
    assert missing.exit_code == 2 and "suite folder not found" in missing.output
