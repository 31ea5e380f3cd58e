"""Reading a suite's dataset from disk: JSONL, CSV, Parquet, or a Hugging Face dataset folder.

Every format comes back as the same `Table` (a list of row dicts plus the column names), so the suite
code above it never cares where the rows came from. Errors name the file and, where it helps, the line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evals.errors import SuiteError

DatasetFormat = Literal["auto", "jsonl", "csv", "parquet", "hf"]


@dataclass(frozen=True)
class Table:
    """Rows of a dataset with the union of their column names, in first-seen order."""

    rows: list[dict[str, Any]]
    columns: list[str]
    source: Path


def detect_format(path: Path) -> DatasetFormat:
    """Guess the format from the path: a folder is a HF dataset, otherwise the file extension decides."""
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise SuiteError(
        f"cannot tell the format of dataset {path} from its extension {suffix!r}: "
        "use .jsonl, .csv, .parquet, a Hugging Face dataset folder, or set dataset.format"
    )


def read_table(path: Path, fmt: DatasetFormat = "auto", *, split_column: str = "split") -> Table:
    """Read every row of the dataset at `path`.

    A HF `DatasetDict` folder is flattened: each row gets its split name in `split_column`.
    """
    if not path.exists():
        raise SuiteError(f"dataset file not found: {path}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "jsonl":
        rows = _read_jsonl(path)
    elif fmt == "csv":
        rows = _read_csv(path)
    elif fmt == "parquet":
        rows = _read_parquet(path)
    elif fmt == "hf":
        rows = _read_hf_folder(path, split_column)
    else:  # pragma: no cover - pydantic restricts the literal
        raise SuiteError(f"unknown dataset format {fmt!r}")
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    return Table(rows=rows, columns=list(columns), source=path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SuiteError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise SuiteError(
                    f"{path}:{line_no}: each line must be a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if reader.fieldnames is None:
            raise SuiteError(f"{path}: CSV file has no header row")
        return [dict(row) for row in reader]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise SuiteError(f"{path}: cannot read Parquet file ({exc})") from exc
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _read_hf_folder(path: Path, split_column: str) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors
        raise SuiteError(
            f"{path}: not a Hugging Face dataset folder saved with save_to_disk ({exc})"
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        rows: list[dict[str, Any]] = []
        for split_name, split in loaded.items():
            for row in split:
                rows.append({**row, split_column: split_name})
        return rows
    return [dict(row) for row in loaded]
