"""`tuneloop init`: a project folder scaffolded from a user's JSONL (chat records or input/label pairs).

The written spec, training config, recipe, suites and settings load through the loaders the commands use;
the split is disjoint and deterministic; paths are relative (the folder works from any working directory);
every bad input is a clear error with exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from evals.suite import load_suite, load_suite_data
from monitoring.spec import load_spec
from training.config import load_config
from tuneloop.commands.init import register
from tuneloop.scaffold import MIN_EXAMPLES, InitError, InitOptions, scaffold
from tuneloop.settings import load_settings

QUEUES = {"billing": 20, "technical": 16, "sales": 8}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_rows(n: int = 30) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You answer questions about the Orbit router."},
                {"role": "user", "content": f"Question {i}: which port does service {i} use?"},
                {"role": "assistant", "content": f"Service {i} listens on port {8000 + i}."},
            ],
            "reference": str(8000 + i),
        }
        for i in range(n)
    ]


def classification_rows() -> list[dict[str, Any]]:
    rows = []
    for queue, count in QUEUES.items():
        for i in range(count):
            label = "urgent" if i % 3 == 0 else "normal"
            rows.append(
                {"text": f"{queue} ticket {i}: something about item {i}", "label": label, "queue": queue}
            )
    return rows


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    register(root)
    return root


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def train_prompts(folder: Path) -> set[str]:
    return {
        next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user")
        for r in read_jsonl(folder / "data" / "train.jsonl")
    }


# ------------------------------------------------------------------------------------------ chat


def test_chat_project_loads_and_holds_out_its_suite(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "faq.jsonl", chat_rows())
    result = scaffold(InitOptions(data=data, adapter="faq", folder=tmp_path / "faq-loop"))
    folder = result.folder
    assert result.task == "chat" and result.metric == "contains_answer"  # every record has a reference
    spec = load_spec(folder / "loop.yaml")
    assert spec.adapter == "faq" and spec.suites.target is None  # no slices: regression only
    assert spec.suites.regression == str(folder / "suites" / "regression.yaml")
    assert spec.recipe.training == folder / "recipe.yaml"
    assert spec.recipe.replay == folder / "data" / "train.jsonl"
    assert spec.resolved_state_dir() == folder / ".tuneloop" / "loop"
    config = load_config(folder / "train.yaml")
    assert config.data.sources[0].path == folder / "data" / "train.jsonl"  # type: ignore[union-attr]
    assert config.output.runs_dir == folder / ".tuneloop" / "runs"
    assert config.data.split.test == 0.0
    suite = load_suite(folder / "suites" / "regression.yaml")
    examples = load_suite_data(suite).eval_examples
    assert len(examples) == result.n_regression == 6
    assert suite.primary == "contains_answer" and suite.prompt.system is not None
    assert all(e.reference and e.reference.isdigit() for e in examples)
    # held out: no suite prompt is in the training file, and together they are every example
    held = {e.fields["question"] for e in examples}
    assert not held & train_prompts(folder)
    assert len(held) + len(train_prompts(folder)) == 30 == result.n_train + result.n_regression
    assert load_settings(folder / "settings.yaml").serving.home == folder / ".tuneloop"


def test_long_answers_gate_on_rouge_and_score_live_traffic_with_token_f1(tmp_path: Path) -> None:
    rows = chat_rows()
    for row in rows:
        del row["reference"]
        row["messages"][-1]["content"] += " It is configured in the admin panel under network settings."
    data = write_jsonl(tmp_path / "faq.jsonl", rows)
    result = scaffold(InitOptions(data=data, adapter="faq", folder=tmp_path / "p"))
    assert result.metric == "rougeL" and "long reference answers" in result.metric_reason
    spec = load_spec(result.folder / "loop.yaml")
    assert {"kind": "reference", "metric": "token_f1"} in spec.scorers


def test_short_answers_without_reference_use_contains_answer(tmp_path: Path) -> None:
    rows = chat_rows()
    for row in rows:
        del row["reference"]
        row["messages"][-1]["content"] = row["messages"][-1]["content"].split()[-1]
    result = scaffold(
        InitOptions(data=write_jsonl(tmp_path / "d.jsonl", rows), adapter="a", folder=tmp_path / "p")
    )
    assert result.task == "chat" and result.metric == "contains_answer"
    assert load_suite(result.folder / "suites" / "regression.yaml").metric_specs()[1].name == "exact_match"


# ------------------------------------------------------------------------------------------ classification


def test_classification_with_a_slice_key_targets_the_smallest_slice(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", classification_rows())
    result = scaffold(InitOptions(data=data, adapter="triage", folder=tmp_path / "t", slice_key="queue"))
    folder = result.folder
    assert result.task == "classification" and result.labels == ["normal", "urgent"]
    assert result.target_slice == "sales" and result.metric == "accuracy"
    spec = load_spec(folder / "loop.yaml")
    assert spec.slice_key == "queue"
    assert {"kind": "reference", "metric": "exact_match", "tag_keys": ["label", "reference"]} in spec.scorers
    target = load_suite(folder / "suites" / "target.yaml")
    regression = load_suite(folder / "suites" / "regression.yaml")
    assert target.task == "classification" and target.labels == ["normal", "urgent"]
    assert target.gate.role == "target" and regression.gate.role == "regression"
    t_rows = load_suite_data(target).eval_examples
    r_rows = load_suite_data(regression).eval_examples
    assert {e.slice for e in t_rows} == {"sales"}
    assert {e.slice for e in r_rows} == {"billing", "technical"}
    # per slice: 20 % held out (at least 2), the rest trained on; no prompt on both sides
    assert result.slices == {"billing": (16, 4), "sales": (6, 2), "technical": (13, 3)}
    held = {e.fields["text"] for e in t_rows + r_rows}
    assert not held & train_prompts(folder)
    # the training records teach the suite's own prompt: same system message, the label as the answer
    first = read_jsonl(folder / "data" / "train.jsonl")[0]["messages"]
    assert first[0] == {"role": "system", "content": target.prompt.system}
    assert first[-1]["content"] in ("normal", "urgent")


def test_target_slice_option_and_detected_slice_key(tmp_path: Path) -> None:
    rows = classification_rows()
    for row in rows:
        row["category"] = row.pop("queue")
    data = write_jsonl(tmp_path / "tickets.jsonl", rows)
    result = scaffold(InitOptions(data=data, adapter="triage", folder=tmp_path / "t", target_slice="billing"))
    assert result.slice_key == "category" and result.slice_key_detected
    assert result.target_slice == "billing" and result.n_target == 4
    regression = load_suite(result.folder / "suites" / "regression.yaml")
    assert {e.slice for e in load_suite_data(regression).eval_examples} == {"sales", "technical"}


def test_split_is_deterministic_and_follows_the_seed(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", classification_rows())

    def held(folder: str, seed: int) -> list[str]:
        result = scaffold(
            InitOptions(data=data, adapter="t", folder=tmp_path / folder, slice_key="queue", seed=seed)
        )
        return sorted(
            (result.folder / "suites" / name).read_text() for name in ("target.jsonl", "regression.jsonl")
        )

    first, again, other_seed = held("a", 0), held("b", 0), held("c", 1)
    assert first == again
    assert other_seed != first
    assert (tmp_path / "a" / "data" / "train.jsonl").read_bytes() == (
        tmp_path / "b" / "data" / "train.jsonl"
    ).read_bytes()


def test_duplicate_prompts_stay_on_one_side(tmp_path: Path) -> None:
    rows = classification_rows()
    rows += [dict(r) for r in rows[:10]]  # the same billing tickets twice
    result = scaffold(
        InitOptions(
            data=write_jsonl(tmp_path / "d.jsonl", rows),
            adapter="t",
            folder=tmp_path / "p",
            slice_key="queue",
        )
    )
    suites = read_jsonl(result.folder / "suites" / "regression.jsonl") + read_jsonl(
        result.folder / "suites" / "target.jsonl"
    )
    assert not {r["text"] for r in suites} & train_prompts(result.folder)


def test_the_folder_works_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "tickets.jsonl", classification_rows())
    monkeypatch.chdir(tmp_path)
    scaffold(InitOptions(data=Path("tickets.jsonl"), adapter="triage", slice_key="queue"))
    folder = tmp_path / "triage-loop"
    for name in ("loop.yaml", "train.yaml", "recipe.yaml", "suites/target.yaml", "suites/regression.yaml"):
        text = (folder / name).read_text()
        assert str(tmp_path) not in text, f"{name} holds an absolute path"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(Path("../triage-loop/loop.yaml"))
    for suite in spec.suites.names():
        assert load_suite_data(load_suite(suite)).eval_examples
    assert load_config(folder / "train.yaml").data.sources[0].path == folder / "data" / "train.jsonl"  # type: ignore[union-attr]
    assert spec.recipe.template()["output"]["runs_dir"] == str(folder / ".tuneloop" / "runs")
    assert (
        load_settings(folder / "settings.yaml")
        .serving.resolved_database_url()
        .startswith(f"sqlite:///{folder}/.tuneloop/")
    )
    assert yaml.safe_load((folder / "loop.yaml").read_text())["suites"]["target"] == "./suites/target.yaml"


# ------------------------------------------------------------------------------------------ the command


def test_cli_summary_reads_well_when_piped(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", classification_rows())
    folder = tmp_path / "a-rather-long-folder-name-for-the-ticket-triage-project-loop"
    result = CliRunner().invoke(
        app(), ["init", str(data), "--adapter", "triage", "--dir", str(folder), "--slice-key", "queue"]
    )  # CliRunner output is not a terminal: rich's 80 columns
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"wrote {folder}" in out  # not cut at 80 columns
    assert "tuneloop train train.yaml --register triage --config settings.yaml" in out
    assert "tuneloop loop --spec loop.yaml --config settings.yaml" in out
    assert "tuneloop serve --config settings.yaml" in out
    assert "sales" in out and "target" in out and "accuracy" in out
    readme = (folder / "README.md").read_text()
    assert "tuneloop eval run suites/target.yaml --model triage --config settings.yaml" in readme


def test_cli_refuses_a_non_empty_folder_without_force(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", classification_rows())
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    runner = CliRunner()
    result = runner.invoke(
        app(), ["init", str(data), "--adapter", "t", "--dir", str(folder)], terminal_width=200
    )
    assert result.exit_code == 2 and "is not empty" in result.output and "--force" in result.output
    result = runner.invoke(app(), ["init", str(data), "--adapter", "t", "--dir", str(folder), "--force"])
    assert result.exit_code == 0, result.output
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "loop.yaml").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ('{"input": "a", "label": "b"}\n{"input": "c", "label": \n', ":2: not valid JSON"),
        (
            '{"input": "a", "label": "b"}\n{"foo": 1, "bar": 2}\n',
            "line 2: neither a chat record nor an input/label pair",
        ),
        ("[1, 2]\n", "line 1: a JSON list, not an object"),
        (
            '{"messages": [{"role": "user", "content": "hi"}]}\n',
            "line 1: the last message must be a non-empty assistant turn",
        ),
        ('{"input": "a", "label": "b"}\n' * 5, f"5 usable example(s); at least {MIN_EXAMPLES}"),
    ],
)
def test_bad_input_data_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    with pytest.raises(InitError) as info:
        scaffold(InitOptions(data=data, adapter="a", folder=tmp_path / "p"))
    assert message in str(info.value)
    result = CliRunner().invoke(app(), ["init", str(data), "--adapter", "a", "--dir", str(tmp_path / "q")])
    assert result.exit_code == 2, result.output
    assert message in result.output  # printed unwrapped (soft wrap), also when piped
    assert not (tmp_path / "q").exists()  # nothing written on bad data


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "tickets.jsonl", classification_rows())
    cases = [
        (InitOptions(data=tmp_path / "missing.jsonl", adapter="a"), "data file not found"),
        (InitOptions(data=data, adapter="a", slice_key="team"), "have no 'team' field"),
        (InitOptions(data=data, adapter="a", slice_key="queue", target_slice="sale"), "did you mean 'sales'"),
        (InitOptions(data=data, adapter="bad name!"), "--adapter 'bad name!'"),
    ]
    for opts, message in cases:
        with pytest.raises(InitError) as info:
            scaffold(InitOptions(**{**opts.__dict__, "folder": tmp_path / "p"}))
        assert message in str(info.value), str(info.value)
    rows = [{"input": f"q{i}", "label": "same"} for i in range(25)]
    with pytest.raises(InitError, match="at least 2 labels"):
        scaffold(
            InitOptions(
                data=write_jsonl(tmp_path / "one.jsonl", rows),
                adapter="a",
                folder=tmp_path / "p",
                task="classification",
            )
        )


def test_mixed_shapes_multi_turn_and_own_system_prompts(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = chat_rows(12)
    for i, row in enumerate(rows):
        row["messages"][0]["content"] = f"You are assistant number {i % 3}."
    rows[0]["messages"][1:1] = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]
    rows += [
        {"question": f"Which port does backup job {i} use?", "answer": f"Port {9000 + i}."} for i in range(12)
    ]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = scaffold(InitOptions(data=data, adapter="mixed", folder=tmp_path / "p", task="chat"))
    suite = load_suite(result.folder / "suites" / "regression.yaml")
    assert suite.prompt.system == "{{ system }}"  # the records' own system prompts, per example
    examples = load_suite_data(suite).eval_examples
    assert all("system" in e.fields for e in examples)
    records = read_jsonl(result.folder / "data" / "train.jsonl")
    assert any(len(r["messages"]) == 5 for r in records) or any("multi-turn" in w for w in result.warnings)
    assert load_config(result.folder / "train.yaml").data.max_seq_length >= 192
