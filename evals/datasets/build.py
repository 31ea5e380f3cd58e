"""Write the shipped suites' datasets to evals/suites/data/*.jsonl, deterministically.

Run: python -m evals.datasets.build [FOLDER]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from evals.datasets import builtin

DATA_DIR = Path(__file__).resolve().parent.parent / "suites" / "data"

DATASETS: dict[str, Callable[[], list[dict[str, object]]]] = {
    "general_qa": builtin.general_qa_rows,
    "summaries": builtin.summarization_rows,
    "intents": builtin.intent_rows,
    "translations_en_fr": builtin.translation_rows,
    "code_functions": builtin.code_rows,
    "styled_replies": builtin.styled_rows,
    "support_target": builtin.support_target_rows,
    "support_regression": builtin.support_regression_rows,
}


def render(name: str) -> str:
    """The JSONL text of dataset `name`."""
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in DATASETS[name]())


def build(target: Path = DATA_DIR) -> list[Path]:
    """Write every dataset into `target`; returns the paths written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DATASETS:
        path = target / f"{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(render(name), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in build(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR):
        print(written_path)
