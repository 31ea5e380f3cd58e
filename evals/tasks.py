"""Task types: what a suite's model output is, how to pull the answer out of it, default metrics.

Registered by name (`register_task`) like metrics, so a new task type is one small object, not an
if/else chain in the runner.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evals.errors import SuiteError

Extractor = Callable[[str, Sequence[str] | None], str]


@dataclass(frozen=True)
class TaskType:
    """A kind of eval task."""

    name: str
    description: str
    default_metrics: tuple[str, ...]
    extract: Extractor
    needs_labels: bool = False
    needs_reference: bool = True


_TASKS: dict[str, TaskType] = {}


def register_task(task: TaskType) -> TaskType:
    """Add a task type to the registry (a name may be registered once)."""
    if task.name in _TASKS:
        raise ValueError(f"task type {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> TaskType:
    """The task type called `name`; the error lists the known ones."""
    try:
        return _TASKS[name]
    except KeyError:
        raise SuiteError(f"unknown task type {name!r}; known: {', '.join(sorted(_TASKS))}") from None


def task_names() -> list[str]:
    """Names of every registered task type."""
    return sorted(_TASKS)


def strip_output(output: str, labels: Sequence[str] | None = None) -> str:
    """Default extraction: the output without surrounding whitespace."""
    return output.strip()


def extract_label(output: str, labels: Sequence[str] | None) -> str:
    """The label that appears first in the output (case-insensitive, whole words); else the raw output.

    Small models rarely answer with the bare label ("The sentiment is positive."), so the earliest
    mention wins; ties go to the longer label ("very negative" over "negative").
    """
    text = output.strip()
    if not labels:
        return text
    best: tuple[int, int, str] | None = None
    lowered = text.lower()
    for label in labels:
        match = re.search(rf"(?<![\w-]){re.escape(label.lower())}(?![\w-])", lowered)
        if match is None:
            continue
        key = (match.start(), -len(label), label)
        if best is None or key < best:
            best = key
    return best[2] if best is not None else text


_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(output: str, labels: Sequence[str] | None = None) -> str:
    """The first fenced code block (```python ... ```), else the whole output."""
    match = _FENCE.search(output)
    if match:
        return match.group(1).strip("\n")
    return output.strip("\n")


register_task(
    TaskType(
        "chat_qa", "Question answering in a chat turn.", ("contains_answer", "exact_match"), strip_output
    )
)
register_task(TaskType("summarization", "Summarise a passage.", ("rougeL", "rouge1"), strip_output))
register_task(
    TaskType(
        "classification",
        "Pick one label (sentiment, intent, ...).",
        ("accuracy", "f1"),
        extract_label,
        needs_labels=True,
    )
)
register_task(TaskType("translation", "Translate a sentence.", ("chrf", "bleu"), strip_output))
register_task(TaskType("code", "Write code that passes the example's tests.", ("pass_at_1",), extract_code))
register_task(
    TaskType(
        "styled",
        "Write content in a required style, judged by a rubric.",
        ("llm_judge",),
        strip_output,
        needs_reference=False,
    )
)
