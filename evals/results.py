"""Run results: per-example records (paired by example id), per-metric summaries, and their files.

A run folder holds `generations.jsonl` (append-only while running; what makes a run resumable),
`results.jsonl` (every example with its metric scores) and `summary.json` (run metadata and aggregates).
The last two are written to a temp file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evals.errors import RunDataError

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
GENERATIONS_FILE = "generations.jsonl"


@dataclass
class MetricValue:
    """One metric on one example: display score (None = not scored) and sufficient statistics."""

    score: float | None
    stats: list[float]
    detail: dict[str, Any] | None = None


@dataclass
class ExampleResult:
    """Everything known about one example in one run."""

    id: str
    slice: str | None
    prompt: str
    """The final user turn (few-shot turns are not repeated here)."""
    reference: str | None
    fingerprint: str
    """Hash of model + messages + settings: a resumed run reuses a generation only when it matches."""
    output: str | None = None
    prediction: str | None = None
    error: str | None = None
    served_by: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    attempts: int = 0
    metrics: dict[str, MetricValue] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.output is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExampleResult:
        metrics = {name: MetricValue(**value) for name, value in (raw.get("metrics") or {}).items()}
        return cls(**{**raw, "metrics": metrics})


@dataclass
class MetricSummary:
    """A metric's aggregate on a run (or slice) with its bootstrap interval."""

    value: float
    low: float
    high: float
    n: int


@dataclass
class RunResult:
    """One model evaluated on one suite."""

    run_id: str
    suite: str
    task: str
    model: str
    base_url: str
    k_shot: int
    primary_metric: str
    metric_kinds: dict[str, str]
    higher_is_better: dict[str, bool]
    slice_column: str | None
    gate: dict[str, Any]
    thresholds: dict[str, float]
    started_at: str
    finished_at: str | None = None
    complete: bool = False
    stop_reason: str | None = None
    planned: int = 0
    examples: list[ExampleResult] = field(default_factory=list)
    summaries: dict[str, dict[str, MetricSummary]] = field(default_factory=dict)
    """metric -> {"__all__" or slice name -> summary}."""
    threshold_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str | None = None

    ALL = "__all__"

    @property
    def label(self) -> str:
        """Short human name: model plus few-shot mode."""
        return f"{self.model} ({self.k_shot}-shot)" if self.k_shot else self.model

    @property
    def n_ok(self) -> int:
        return sum(1 for e in self.examples if e.ok)

    @property
    def n_failed(self) -> int:
        return sum(1 for e in self.examples if not e.ok)

    def served_by(self) -> dict[str, int]:
        """How many answers each `name@version` (or response model name) served."""
        return dict(Counter(e.served_by or e.model or "unknown" for e in self.examples if e.ok))

    def error_counts(self) -> dict[str, int]:
        return dict(Counter((e.error or "")[:160] for e in self.examples if not e.ok))

    def slices(self) -> list[str]:
        return sorted({e.slice for e in self.examples if e.slice is not None})

    def by_id(self) -> dict[str, ExampleResult]:
        return {e.id: e for e in self.examples}

    def metric_rows(self, metric: str, ids: Sequence[str]) -> np.ndarray:
        """Sufficient-statistic rows of `metric` for `ids` in that order (zeros where not scored)."""
        by_id = self.by_id()
        width = self.stat_width(metric)
        rows = np.zeros((len(ids), width))
        for i, example_id in enumerate(ids):
            value = by_id[example_id].metrics.get(metric) if example_id in by_id else None
            if value is not None:
                rows[i] = value.stats
        return rows

    def stat_width(self, metric: str) -> int:
        for example in self.examples:
            value = example.metrics.get(metric)
            if value is not None:
                return len(value.stats)
        return 2

    def scored_ids(self, metric: str, slice_name: str | None = None) -> list[str]:
        """Ids of examples that have `metric` (optionally within one slice), in run order."""
        return [
            e.id
            for e in self.examples
            if metric in e.metrics and (slice_name is None or e.slice == slice_name)
        ]

    def metrics(self) -> list[str]:
        return list(self.metric_kinds)

    def summary_dict(self) -> dict[str, Any]:
        """Everything but the examples (what summary.json holds)."""
        raw = asdict(self)
        raw.pop("examples")
        raw["n_ok"] = self.n_ok
        raw["n_failed"] = self.n_failed
        raw["served_by"] = self.served_by()
        raw["errors"] = self.error_counts()
        return raw

    def save(self, folder: str | Path | None = None) -> Path:
        """Write results.jsonl and summary.json into `folder` (default: the run's own path) atomically."""
        target = Path(folder or self.path or "")
        if not str(target):
            raise RunDataError("run has no folder to save into")
        target.mkdir(parents=True, exist_ok=True)
        self.path = str(target)
        write_jsonl_atomic(target / RESULTS_FILE, (e.to_dict() for e in self.examples))
        write_text_atomic(target / SUMMARY_FILE, dumps_json(self.summary_dict(), indent=2))
        return target

    @classmethod
    def load(cls, folder: str | Path) -> RunResult:
        """Read a run saved by `save` (or by the runner)."""
        folder = Path(folder)
        summary_path, results_path = folder / SUMMARY_FILE, folder / RESULTS_FILE
        if not summary_path.is_file() or not results_path.is_file():
            raise RunDataError(
                f"{folder} is not a finished eval run (needs {SUMMARY_FILE} and {RESULTS_FILE}); "
                "rerun `tuneloop eval` to finish it"
            )
        try:
            raw = json.loads(summary_path.read_text(encoding="utf-8"))
            examples = [ExampleResult.from_dict(row) for row in read_jsonl(results_path)]
        except (ValueError, TypeError) as exc:
            raise RunDataError(f"{folder}: unreadable run files ({exc})") from exc
        for key in ("n_ok", "n_failed", "served_by", "errors"):
            raw.pop(key, None)
        summaries = {
            metric: {name: MetricSummary(**_nan_for_none(values)) for name, values in per.items()}
            for metric, per in raw.pop("summaries", {}).items()
        }
        raw["path"] = str(folder)
        return cls(**raw, examples=examples, summaries=summaries)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (crash mid-write) is skipped, other bad lines are errors."""
    rows: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RunDataError(f"{path}:{number}: corrupt line") from None
    return rows


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(dumps_json(row) + "\n" for row in rows))


def json_safe(value: Any) -> Any:
    """A copy of `value` that strict JSON accepts: NaN/inf become None, numpy values and Paths plain ones."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text (no NaN) for results, gate decisions and reports."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False, default=_json_default)


def _nan_for_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (float("nan") if v is None and k != "n" else v) for k, v in values.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
