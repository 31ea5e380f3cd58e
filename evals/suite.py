"""Eval suite files: the YAML schema, loading by name or path, and validating a suite against its data.

A suite names a dataset, a task type, prompt templates, generation settings, metrics, a slice column,
thresholds, few-shot settings and its role in the promotion gate. `load_suite` validates everything that
can be validated without a model (file exists, columns exist, template fields exist, metrics are known),
so a broken suite fails in a second with the cause named.

Suites are `common.settings.ConfigModel`s read through `common.settings` (every problem of a file is listed
at once, with its key); `dataset.path` is a `ConfigPath`, resolved against the suite file's folder. A suite
is named by a shipped suite's name or by a YAML path; relative paths resolve against `base_dir` (e.g. the
folder of the loop spec that lists the suite), else the current directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from common.settings import ConfigModel, ConfigPath, expand_path, read_yaml_mapping, validate_config
from evals.dataset_files import DatasetFormat, Table, read_table
from evals.errors import SuiteError
from evals.example import Example
from evals.prompts import ChatPrompt, PromptTemplate, TemplateEngine, choose_shots
from evals.tasks import get_task

BUILTIN_SUITES_DIR = Path(__file__).parent / "suites"


class _Strict(ConfigModel):
    """A suite section: a ConfigModel that is also frozen (suites are shared between concurrent runs)."""

    model_config = ConfigDict(frozen=True)


class DatasetSpec(_Strict):
    """Where the examples are and which columns mean what."""

    path: ConfigPath
    """JSONL/CSV/Parquet file or HF dataset folder; relative paths are relative to the suite file."""
    format: DatasetFormat = "auto"
    id_column: str = "id"
    reference_column: str | None = "reference"
    split_column: str | None = "split"
    """Column naming each row's split; None means every row is an eval row."""
    eval_split: str = "test"
    train_split: str | None = "train"
    """Split few-shot examples are drawn from."""


class PromptSpec(_Strict):
    """Templates rendering an example into chat messages."""

    template: str
    """The user turn."""
    system: str | None = None
    answer: str | None = None
    """Assistant turn for few-shot examples; defaults to the reference column."""
    engine: TemplateEngine = "jinja"


class GenerationSpec(_Strict):
    """Sampling settings sent with every request."""

    max_tokens: int = Field(default=128, gt=0)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] | None = None
    seed: int | None = 0
    api: Literal["chat", "completions"] = "chat"


class MetricSpec(_Strict):
    """A metric instance: `name` appears in results; `metric` is the registered kind (default: name)."""

    name: str
    metric: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.metric or self.name


class FewShotSpec(_Strict):
    """Default k-shot settings (the CLI's --k-shot overrides k)."""

    k: int = Field(default=0, ge=0)
    seed: int = 0


class GateSpec(_Strict):
    """The suite's role in the promotion gate."""

    role: Literal["target", "regression", "none"] = "none"
    metric: str | None = None
    """Metric the gate decides on; default: the suite's primary metric."""
    margin: float = Field(default=0.02, ge=0.0)
    """Regression suites: the challenger may be at most this much worse (absolute, metric units)."""
    min_improvement: float = Field(default=0.0, ge=0.0)
    """Target suites: the CI's lower end must exceed this."""


class Suite(_Strict):
    """A validated eval suite (see evals/suites/*.yaml for examples)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    task: str
    dataset: DatasetSpec
    prompt: PromptSpec
    generation: GenerationSpec = Field(default_factory=lambda: GenerationSpec())
    metrics: list[MetricSpec] = Field(default_factory=list)
    primary_metric: str | None = None
    slice_column: str | None = None
    labels: list[str] | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Minimum acceptable value per metric (maximum for lower-is-better metrics)."""
    few_shot: FewShotSpec = Field(default_factory=lambda: FewShotSpec())
    gate: GateSpec = Field(default_factory=lambda: GateSpec())
    base_dir: str = "."
    """The folder the suite was read from (set by load_suite); a dataset path still relative (a suite
    validated without a folder) resolves against it."""

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_names_to_specs(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{"name": item} if isinstance(item, str) else item for item in value]

    @model_validator(mode="after")
    def _check_consistency(self) -> Suite:
        task = get_task(self.task)
        if task.needs_labels and not self.labels:
            raise ValueError(f"task {self.task!r} needs `labels` (the allowed classes)")
        names = [spec.name for spec in self.metric_specs()]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        if self.primary_metric is not None and self.primary_metric not in names:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} is not one of the suite's metrics {names}"
            )
        if self.gate.metric is not None and self.gate.metric not in names:
            raise ValueError(f"gate.metric {self.gate.metric!r} is not one of the suite's metrics {names}")
        for metric_name in self.thresholds:
            if metric_name not in names:
                raise ValueError(
                    f"threshold for {metric_name!r}, which is not one of the suite's metrics {names}"
                )
        if task.needs_reference and self.dataset.reference_column is None:
            raise ValueError(f"task {self.task!r} needs dataset.reference_column")
        return self

    def metric_specs(self) -> list[MetricSpec]:
        """The suite's metrics, or the task type's defaults when the suite lists none."""
        if self.metrics:
            return list(self.metrics)
        return [MetricSpec(name=name) for name in get_task(self.task).default_metrics]

    @property
    def primary(self) -> str:
        """The metric reports lead with (first metric unless primary_metric says otherwise)."""
        return self.primary_metric or self.metric_specs()[0].name

    @property
    def gate_metric(self) -> str:
        return self.gate.metric or self.primary

    def dataset_path(self) -> Path:
        return expand_path(self.dataset.path, Path(self.base_dir))

    def chat_prompt(self) -> ChatPrompt:
        engine = self.prompt.engine
        answer_source = self.prompt.answer
        if answer_source is None and self.dataset.reference_column is not None:
            answer_source = (
                "{{ " + self.dataset.reference_column + " }}"
                if engine == "jinja"
                else "{" + self.dataset.reference_column + "}"
            )
        return ChatPrompt(
            user=PromptTemplate(self.prompt.template, engine),
            system=PromptTemplate(self.prompt.system, engine) if self.prompt.system else None,
            answer=PromptTemplate(answer_source, engine) if answer_source else None,
        )


@dataclass(frozen=True)
class SuiteData:
    """A suite's examples split into what is evaluated and what few-shot prompts draw from."""

    suite: Suite
    eval_examples: list[Example]
    train_examples: list[Example]

    def shots_for(self, example: Example, k: int) -> list[tuple[dict[str, Any], str]]:
        """The k few-shot (fields, answer) pairs for one example (deterministic per example id)."""
        if k <= 0:
            return []
        if not self.train_examples:
            raise SuiteError(
                f"suite {self.suite.name!r} has no {self.suite.dataset.train_split!r} split to draw "
                f"{k}-shot examples from"
            )
        answer = self.suite.chat_prompt().answer
        if answer is None:
            raise SuiteError(f"suite {self.suite.name!r}: k-shot needs prompt.answer or a reference column")
        picks = choose_shots(
            len(self.train_examples), k, seed=self.suite.few_shot.seed, example_key=example.id
        )
        return [(self.train_examples[i].fields, answer.render(self.train_examples[i].fields)) for i in picks]

    def messages_for(self, example: Example, k: int) -> list[dict[str, str]]:
        return self.suite.chat_prompt().messages(example.fields, self.shots_for(example, k))


SUITE_SUFFIXES = (".yaml", ".yml")


def _looks_like_name(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return "/" not in text and "\\" not in text and not text.endswith(SUITE_SUFFIXES)


def suite_path(name_or_path: str | Path, *, base_dir: Path | None = None) -> Path:
    """Resolve a suite argument: a YAML path (`~`/`$VARS` expanded; relative paths against `base_dir`,
    default the current directory), else the name of a suite shipped in evals/suites."""
    candidate = expand_path(name_or_path, base_dir)
    if candidate.is_file():
        return candidate
    if _looks_like_name(name_or_path):
        builtin = BUILTIN_SUITES_DIR / f"{name_or_path}.yaml"
        if builtin.is_file():
            return builtin
    known = ", ".join(builtin_suite_names())
    if _looks_like_name(name_or_path):
        where = f" (looked for {candidate})" if base_dir is not None else ""
        raise SuiteError(
            f"suite {str(name_or_path)!r} not found: not a file{where}, and not a shipped suite ({known})"
        )
    raise SuiteError(f"suite file not found: {candidate} (shipped suites: {known})")


def builtin_suite_names() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(path.stem for path in BUILTIN_SUITES_DIR.glob("*.yaml"))


def suite_files(folder: str | Path) -> list[Path]:
    """The suite files (`*.yaml`, `*.yml`) directly in `folder`, sorted; a missing folder is an error."""
    path = expand_path(folder)
    if not path.is_dir():
        raise SuiteError(f"suite folder not found: {path}")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUITE_SUFFIXES)


def parse_suite(raw: Any, *, base_dir: Path, source: str = "<suite>") -> Suite:
    """Validate a suite mapping (as read from YAML) into a `Suite`; relative dataset paths resolve against
    `base_dir`. Every problem is listed at once: `<source>: invalid suite: <key>: <problem>`."""
    data = {**raw, "base_dir": str(base_dir)} if isinstance(raw, dict) else raw
    return validate_config(
        Suite, data, what="suite", base_dir=base_dir, error=lambda message: SuiteError(f"{source}: {message}")
    )


def read_suite(path: str | Path) -> Suite:
    """Read and validate one suite file (no metric or data checks: see `load_suite`)."""
    file = Path(path)
    raw = read_yaml_mapping(file, what="suite", error=SuiteError)
    return parse_suite(raw, base_dir=file.resolve().parent, source=str(file))


def load_suite(
    name_or_path: str | Path | Suite, *, check_data: bool = True, base_dir: Path | None = None
) -> Suite:
    """Load and validate a suite by shipped name or YAML path (relative to `base_dir` when given).

    With `check_data` the dataset is read and the template/columns/metrics are checked too.
    """
    suite = (
        name_or_path
        if isinstance(name_or_path, Suite)
        else read_suite(suite_path(name_or_path, base_dir=base_dir))
    )
    _check_metrics_known(suite)
    if check_data:
        load_suite_data(suite)
    return suite


def _check_metrics_known(suite: Suite) -> None:
    from evals.metrics import get_metric_class

    for spec in suite.metric_specs():
        get_metric_class(spec.kind).validate_args(spec.name, spec.args)


def load_suite_data(suite: Suite, *, limit: int | None = None) -> SuiteData:
    """Read the suite's dataset, check it against the suite, and split it into eval/train examples."""
    spec = suite.dataset
    table = read_table(suite.dataset_path(), spec.format, split_column=spec.split_column or "split")
    _check_columns(suite, table)
    prompt = suite.chat_prompt()
    where = f"suite {suite.name!r}"
    prompt.user.check_fields(table.columns, where=f"{where}: prompt.template")
    if prompt.system is not None:
        prompt.system.check_fields(table.columns, where=f"{where}: prompt.system")
    if prompt.answer is not None and suite.prompt.answer is not None:
        prompt.answer.check_fields(table.columns, where=f"{where}: prompt.answer")
    needed = prompt.user.fields() | (prompt.system.fields() if prompt.system else set())

    eval_examples: list[Example] = []
    train_examples: list[Example] = []
    seen: set[str] = set()
    for index, row in enumerate(table.rows):
        raw_id = row.get(spec.id_column)
        if raw_id is None or raw_id == "":
            raise SuiteError(f"{table.source}: row {index + 1} has no {spec.id_column!r}")
        example_id = str(raw_id)
        if example_id in seen:
            raise SuiteError(f"{table.source}: duplicate id {example_id!r} (ids must be unique)")
        seen.add(example_id)
        for name in needed:
            if row.get(name) is None:
                raise SuiteError(f"{table.source}: example {example_id!r} has no value for field {name!r}")
        reference = row.get(spec.reference_column) if spec.reference_column else None
        split = (
            str(row[spec.split_column])
            if spec.split_column and row.get(spec.split_column) is not None
            else None
        )
        example = Example(
            id=example_id,
            fields=dict(row),
            reference=None if reference is None else str(reference),
            slice=None
            if suite.slice_column is None or row.get(suite.slice_column) is None
            else str(row[suite.slice_column]),
            split=split,
        )
        if spec.split_column is None or split == spec.eval_split:
            if get_task(suite.task).needs_reference and example.reference is None:
                raise SuiteError(
                    f"{table.source}: example {example_id!r} has no reference ({spec.reference_column!r})"
                )
            eval_examples.append(example)
        elif spec.train_split is not None and split == spec.train_split:
            train_examples.append(example)
    if not eval_examples:
        raise SuiteError(
            f"suite {suite.name!r}: no eval examples in {table.source}"
            + (f" with {spec.split_column}={spec.eval_split!r}" if spec.split_column else "")
        )
    if limit is not None:
        eval_examples = eval_examples[:limit]
    return SuiteData(suite=suite, eval_examples=eval_examples, train_examples=train_examples)


def _check_columns(suite: Suite, table: Table) -> None:
    spec = suite.dataset
    required = {"dataset.id_column": spec.id_column}
    if spec.reference_column:
        required["dataset.reference_column"] = spec.reference_column
    if suite.slice_column:
        required["slice_column"] = suite.slice_column
    if spec.split_column and spec.format != "hf":
        required["dataset.split_column"] = spec.split_column
    for option, column in required.items():
        if column not in table.columns:
            raise SuiteError(
                f"suite {suite.name!r}: {option} is {column!r}, which is not a column of {table.source} "
                f"(columns: {', '.join(table.columns)})"
            )
