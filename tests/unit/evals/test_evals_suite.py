"""Suite files: every shipped suite loads; bad suites fail at load time with the cause named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from evals.errors import MetricError, SuiteError
from evals.suite import builtin_suite_names, load_suite, load_suite_data

FIXTURES = Path(__file__).parents[2] / "fixtures" / "evals"


def write_suite(tmp_path: Path, rows: list[dict[str, Any]] | None = None, **overrides: Any) -> Path:
    data = tmp_path / "data.jsonl"
    if rows is None:
        rows = [
            {
                "id": f"q{i}",
                "question": f"What is {i}+{i}?",
                "answer": str(2 * i),
                "split": "train" if i < 4 else "test",
                "topic": "math" if i % 2 else "other",
            }
            for i in range(10)
        ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    suite: dict[str, Any] = {
        "name": "tiny",
        "task": "chat_qa",
        "dataset": {"path": "data.jsonl", "reference_column": "answer"},
        "slice_column": "topic",
        "prompt": {"template": "{{ question }}"},
        "metrics": ["exact_match"],
    }
    for key, value in overrides.items():
        if value is None:
            suite.pop(key, None)
        else:
            suite[key] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def test_every_shipped_suite_loads_with_examples() -> None:
    names = builtin_suite_names()
    for required in (
        "support_target",
        "support_regression",
        "general_qa",
        "summaries",
        "intents",
        "translation_en_fr",
        "code_functions",
        "styled_replies",
    ):
        assert required in names
    tasks = set()
    for name in names:
        suite = load_suite(name)
        data = load_suite_data(suite)
        tasks.add(suite.task)
        assert 10 <= len(data.eval_examples) <= 60, (name, len(data.eval_examples))  # bounded for CPU runs
        assert all(e.slice for e in data.eval_examples), name
    assert tasks == {"chat_qa", "summarization", "classification", "translation", "code", "styled"}
    assert load_suite("support_target").gate.role == "target"
    assert load_suite("support_regression").gate.role == "regression"


def test_valid_suite_splits_and_slices(tmp_path: Path) -> None:
    data = load_suite_data(load_suite(write_suite(tmp_path)))
    assert [e.id for e in data.eval_examples] == [f"q{i}" for i in range(4, 10)]
    assert len(data.train_examples) == 4
    assert data.eval_examples[0].reference == "8"
    assert {e.slice for e in data.eval_examples} == {"math", "other"}


def test_missing_dataset_file(tmp_path: Path) -> None:
    path = write_suite(tmp_path, dataset={"path": "nope.jsonl", "reference_column": "answer"})
    with pytest.raises(SuiteError, match="dataset file not found: .*nope.jsonl"):
        load_suite(path)


def test_unknown_metric(tmp_path: Path) -> None:
    with pytest.raises(MetricError, match="unknown metric 'exact_mach'"):
        load_suite(write_suite(tmp_path, metrics=["exact_mach"]))


@pytest.mark.parametrize(
    ("template", "engine"), [("Q: {{ questoin }}", "jinja"), ("Q: {questoin}", "format")]
)
def test_template_with_missing_field_names_it(tmp_path: Path, template: str, engine: str) -> None:
    path = write_suite(tmp_path, prompt={"template": template, "engine": engine})
    with pytest.raises(SuiteError, match=r"references field 'questoin'.*columns: id, question, answer"):
        load_suite(path)


def test_template_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="Jinja syntax error"):
        load_suite(write_suite(tmp_path, prompt={"template": "{{ question "}))


def test_unknown_key_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="temperatur.*Extra inputs are not permitted"):
        load_suite(write_suite(tmp_path, generation={"temperatur": 0.1}))
    with pytest.raises(SuiteError, match="unknown task type 'qa'"):
        load_suite(write_suite(tmp_path, task="qa"))


def test_classification_needs_labels(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="needs `labels`"):
        load_suite(write_suite(tmp_path, task="classification", metrics=["accuracy"]))


def test_missing_columns_and_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="slice_column is 'intent', which is not a column"):
        load_suite(write_suite(tmp_path, slice_column="intent"))
    rows = [{"id": "a", "question": "q", "answer": "x", "split": "test", "topic": "t"}] * 2
    with pytest.raises(SuiteError, match="duplicate id 'a'"):
        load_suite(write_suite(tmp_path, rows=rows))


def test_threshold_and_primary_must_name_suite_metrics(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="threshold for 'rougeL'"):
        load_suite(write_suite(tmp_path, thresholds={"rougeL": 0.2}))
    with pytest.raises(SuiteError, match="primary_metric 'bleu'"):
        load_suite(write_suite(tmp_path, primary_metric="bleu"))


def test_suite_not_found_lists_shipped_suites() -> None:
    with pytest.raises(SuiteError, match="not found.*support_target"):
        load_suite("no_such_suite")


def test_few_shot_is_deterministic_and_uses_train_split(tmp_path: Path) -> None:
    data = load_suite_data(load_suite(write_suite(tmp_path)))
    example = data.eval_examples[0]
    first = data.messages_for(example, 3)
    assert first == data.messages_for(example, 3)
    assert [m["role"] for m in first] == ["user", "assistant"] * 3 + ["user"]
    train_questions = {e.fields["question"] for e in data.train_examples}
    assert {m["content"] for m in first[:-1:2]} <= train_questions
    with pytest.raises(SuiteError, match="few_shot.k=5 but the train split has only 4"):
        data.messages_for(example, 5)


def test_k_shot_without_train_split_is_an_error() -> None:
    data = load_suite_data(load_suite("code_functions"))
    with pytest.raises(SuiteError, match="no 'train' split"):
        data.messages_for(data.eval_examples[0], 2)


def test_csv_parquet_and_hf_folder_datasets(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": f"r{i}", "question": f"q{i}", "answer": f"a{i}", "split": "test", "topic": "t"}
        for i in range(5)
    ]
    (tmp_path / "d.csv").write_text(
        "id,question,answer,split,topic\n"
        + "".join(f"{r['id']},{r['question']},{r['answer']},test,t\n" for r in rows),
        encoding="utf-8",
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    datasets.DatasetDict(
        {"test": datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "split"} for r in rows])}
    ).save_to_disk(str(tmp_path / "hf"))
    for path in ("d.csv", "d.parquet", "hf"):
        suite_file = tmp_path / f"s_{path.replace('.', '_')}.yaml"
        suite_file.write_text(
            yaml.safe_dump(
                {
                    "name": "fmt",
                    "task": "chat_qa",
                    "slice_column": "topic",
                    "metrics": ["exact_match"],
                    "dataset": {"path": path, "reference_column": "answer"},
                    "prompt": {"template": "{{ question }}"},
                }
            ),
            encoding="utf-8",
        )
        data = load_suite_data(load_suite(suite_file))
        assert [e.id for e in data.eval_examples] == [r["id"] for r in rows], path
        assert data.eval_examples[2].reference == "a2"


def test_bad_jsonl_line_is_reported_with_line_number(tmp_path: Path) -> None:
    path = write_suite(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"id": "a"}\n{broken\n', encoding="utf-8")
    with pytest.raises(SuiteError, match=r"data.jsonl:2: not valid JSON"):
        load_suite(path)


def test_fixture_suite_with_str_format_template() -> None:
    suite = load_suite(FIXTURES / "capitals_format.yaml")
    data = load_suite_data(suite)
    assert (
        data.messages_for(data.eval_examples[0], 0)[-1]["content"] == "Capital of France? Answer in one word."
    )


def test_user_suite_by_path_relative_to_a_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evals.suite import suite_path

    folder = tmp_path / "spec" / "suites"
    folder.mkdir(parents=True)
    path = write_suite(folder)
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "spec"
    assert suite_path("suites/tiny.yaml", base_dir=base) == path
    suite = load_suite("suites/tiny.yaml", base_dir=base)
    assert suite.dataset.path == folder / "data.jsonl"  # relative to the suite file, not the spec
    assert suite.dataset_path() == folder / "data.jsonl"
    assert load_suite("spec/suites/tiny.yaml").name == "tiny"  # relative to the current directory
    assert load_suite("support_target", base_dir=base).name == "support_target"  # shipped, by name
    with pytest.raises(SuiteError, match=r"suite file not found: .*spec/nope\.yaml"):
        load_suite("nope.yaml", base_dir=base)


def test_every_suite_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path, generation={"temperatur": 0.1, "max_tokens": 0}, few_shot={"k": -1}, prompt={}
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid suite:")
    for needle in (
        "generation.temperatur: Extra inputs are not permitted: unknown key 'temperatur' "
        "(did you mean 'temperature'?)",
        "generation.max_tokens: ",
        "few_shot.k: ",
        "prompt.template: required key is missing",
    ):
        assert needle in message, message


def test_suite_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml: the top level must be a mapping of suite keys"):
        load_suite(bad)
    bad.write_text("name: [\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml is not valid YAML"):
        load_suite(bad)


def test_suite_files_lists_a_folder(tmp_path: Path) -> None:
    from evals.suite import suite_files

    write_suite(tmp_path)
    (tmp_path / "other.yml").write_text("name: x\n")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in suite_files(tmp_path)] == ["other.yml", "tiny.yaml"]
    with pytest.raises(SuiteError, match="suite folder not found"):
        suite_files(tmp_path / "missing")
