"""`tuneloop init`: scaffold a loop project folder from a user's JSONL of examples.

From chat records (`{"messages": [...]}` ending with an assistant turn) or input/label pairs
(`{"input": ..., "label": ...}`; `text`/`prompt`/`question` and `output`/`answer`/`response` are accepted
too), it writes a folder that `tuneloop loop --spec` runs as it is:

    loop.yaml            the loop spec (relative paths, commented)
    train.yaml           the first adapter's training config (the shipped recipe's shape)
    recipe.yaml          the retraining recipe the loop uses (a commented copy of the shipped one)
    suites/target.yaml   + suites/target.jsonl      held-out examples of the target slice
    suites/regression.yaml + suites/regression.jsonl held-out examples of the other slices
    data/train.jsonl     the training split (chat records), also the loop's replay data
    settings.yaml        tuneloop settings: state (registry, database, runs) under <folder>/.tuneloop
    README.md            the commands to run, in order

The split is deterministic (a hash of each example's prompt and the seed; duplicates of a prompt stay on
one side) and per slice, so the suites never contain a prompt the adapter was trained on. Everything
written is loaded back through the same loaders the commands use (`load_spec`, `load_config`,
`load_suite`, `load_settings`) before `scaffold` returns; bad input data is an `InitError` naming the
problem (and the line).

    result = scaffold(InitOptions(data=Path("examples.jsonl"), adapter="triage", slice_key="queue"))
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "INPUT_KEYS",
    "MIN_EXAMPLES",
    "OUTPUT_KEYS",
    "SLICE_KEYS",
    "InitError",
    "InitOptions",
    "InitResult",
    "Record",
    "read_examples",
    "scaffold",
    "split_records",
]

Task = Literal["chat", "classification"]

MIN_EXAMPLES = 20
"""Usable examples needed: fewer leave suites too small to tell a better adapter from noise."""
HOLDOUT = 0.2
"""Share of each slice held out of training for the suites (at least 2 examples per slice)."""
MIN_SLICE_FOR_SUITE = 4
"""A slice with fewer examples goes to training only (it is too small to hold out from)."""
INPUT_KEYS = ("input", "text", "prompt", "question", "instruction", "query")
"""Keys of an input/label row's input, in order of preference."""
OUTPUT_KEYS = ("label", "output", "answer", "response", "completion", "target")
"""Keys of an input/label row's expected output, in order of preference."""
SLICE_KEYS = ("slice", "category", "intent", "topic")
"""Slice fields picked up without --slice-key when every row has one (first match)."""
REFERENCE_KEYS = ("reference", "key_fact", "expected_answer")
"""A chat record's optional short reference (the fact an answer must contain)."""
SHORT_ANSWER_WORDS = 8
"""Median reference length (words) up to which contains_answer is the suite metric."""
STATE_DIR = ".tuneloop"
"""The project's state folder (registry, database, runs, loop state), inside the project folder."""

FILES = (
    "loop.yaml",
    "train.yaml",
    "recipe.yaml",
    "settings.yaml",
    "README.md",
    "data/train.jsonl",
    "suites/target.yaml",
    "suites/target.jsonl",
    "suites/regression.yaml",
    "suites/regression.jsonl",
)


class InitError(Exception):
    """The input data or the target folder cannot make a project (the message names the problem)."""


@dataclass(frozen=True)
class Record:
    """One usable example, normalised from either input shape."""

    line: int
    """1-based line of the JSONL file."""
    prompt: str
    """The last user turn (chat) or the input (pairs)."""
    answer: str
    """The final assistant turn (chat) or the label/output (pairs)."""
    system: str | None = None
    """The record's system message, if any."""
    history: tuple[tuple[str, str], ...] = ()
    """(role, content) turns between the system message and the last user turn."""
    slice: str | None = None
    reference: str | None = None
    """A short reference (`reference`/`key_fact` field) an answer must contain; None: the answer."""
    shape: Literal["chat", "pair"] = "chat"
    output_key: str = ""
    """For pairs: the key the output came from (`label` marks a classification dataset)."""

    @property
    def id(self) -> str:
        return f"ex-{self.line:05d}"


@dataclass(frozen=True)
class InitOptions:
    """What `tuneloop init` was asked for."""

    data: Path
    adapter: str
    folder: Path | None = None
    """Default: ./<adapter>-loop."""
    slice_key: str | None = None
    target_slice: str | None = None
    task: Task | None = None
    """None: detect (classification when the outputs are a few short labels)."""
    seed: int = 0
    force: bool = False


@dataclass
class InitResult:
    """What was written and why (for the summary)."""

    folder: Path
    task: Task
    metric: str
    metric_reason: str
    slice_key: str | None
    slice_key_detected: bool
    target_slice: str | None
    n_examples: int
    n_train: int
    n_target: int
    n_regression: int
    slices: dict[str, tuple[int, int]] = field(default_factory=dict)
    """slice -> (train rows, held-out rows)."""
    labels: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)
    """(what, command) in the order to run them."""


# ------------------------------------------------------------------------------------------ reading


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _slice_value(row: dict[str, Any], key: str) -> str | None:
    for holder in (row, row.get("metadata"), row.get("tags")):
        if isinstance(holder, dict) and key in holder:
            return _text(holder[key])
    return None


def _from_chat(row: dict[str, Any], line: int) -> Record | str:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{i}] must be an object with a role and a content"
        content = message.get("content")
        if not isinstance(content, str):
            return f"messages[{i}].content must be a string"
        turns.append((message["role"], content.strip()))
    role, answer = turns[-1]
    if role != "assistant" or not answer:
        return "the last message must be a non-empty assistant turn (the answer to learn)"
    system = None
    body = turns[:-1]
    if body and body[0][0] == "system":
        system, body = body[0][1] or None, body[1:]
    if not body or body[-1][0] != "user" or not body[-1][1]:
        return "the assistant's answer must follow a non-empty user turn"
    reference = next((_text(row.get(k)) for k in REFERENCE_KEYS if _text(row.get(k))), None)
    return Record(
        line=line,
        prompt=body[-1][1],
        answer=answer,
        system=system,
        history=tuple(body[:-1]),
        reference=reference,
        shape="chat",
    )


def _from_pair(row: dict[str, Any], line: int) -> Record | None:
    prompt = next((_text(row.get(k)) for k in INPUT_KEYS if _text(row.get(k))), None)
    out_key = next((k for k in OUTPUT_KEYS if _text(row.get(k))), None)
    if prompt is None or out_key is None:
        return None
    answer = _text(row[out_key])
    assert answer is not None
    system = _text(row.get("system"))
    return Record(line=line, prompt=prompt, answer=answer, system=system, shape="pair", output_key=out_key)


def read_examples(path: Path, slice_key: str | None = None) -> tuple[list[Record], str | None, bool]:
    """The usable examples of a JSONL file, the slice key in effect and whether it was detected.

    Raises InitError for a missing or empty file, a malformed JSON line (with its number), rows of
    neither shape (their line numbers), rows without the named slice field, or too few examples."""
    rows, bad = _json_objects(path)
    records = _parse_records(rows, bad)
    if bad:
        shown = "\n  ".join(bad[:8]) + (f"\n  … and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise InitError(
            f"{path}: {len(bad)} row(s) cannot be used:\n  {shown}\n"
            'Each line must be a chat record {"messages": [..., {"role": "assistant", ...}]} or a pair '
            f'{{"input": ..., "label": ...}} (input keys: {", ".join(INPUT_KEYS)}; '
            f"output keys: {', '.join(OUTPUT_KEYS)})"
        )
    records, slice_key, detected = _with_slices(path, rows, records, slice_key)
    if len(records) < MIN_EXAMPLES:
        raise InitError(
            f"{path}: {len(records)} usable example(s); at least {MIN_EXAMPLES} are needed to hold out "
            "suites that can tell a better adapter from noise (a few hundred are better)"
        )
    return records, slice_key, detected


def _json_objects(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line number, object) per non-blank line, and the lines that hold JSON but not an object.

    Raises InitError for a missing, non-UTF-8 or empty file and for the first line that is not JSON."""
    if not path.is_file():
        raise InitError(f"data file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InitError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    bad: list[str] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InitError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            bad.append(f"line {number}: a JSON {type(value).__name__}, not an object")
            continue
        rows.append((number, value))
    if not rows and not bad:
        raise InitError(f"{path} is empty: give one JSON example per line")
    return rows, bad


def _parse_records(rows: list[tuple[int, dict[str, Any]]], bad: list[str]) -> list[Record]:
    """Each row as a chat record or an input/label pair; rows of neither shape are added to `bad`."""
    records: list[Record] = []
    for number, row in rows:
        if "messages" in row:
            parsed = _from_chat(row, number)
            if isinstance(parsed, str):
                bad.append(f"line {number}: {parsed}")
                continue
            records.append(parsed)
            continue
        pair = _from_pair(row, number)
        if pair is None:
            keys = ", ".join(sorted(row)) or "no keys"
            bad.append(f"line {number}: neither a chat record nor an input/label pair (keys: {keys})")
            continue
        records.append(pair)
    return records


def _with_slices(
    path: Path, rows: list[tuple[int, dict[str, Any]]], records: list[Record], slice_key: str | None
) -> tuple[list[Record], str | None, bool]:
    """The records with their slice: under `slice_key`, or the first of SLICE_KEYS every row has."""
    detected = False
    if slice_key is None:
        slice_key = next(
            (k for k in SLICE_KEYS if all(_slice_value(r, k) is not None for _, r in rows)), None
        )
        detected = slice_key is not None
    if slice_key is not None:
        by_line = dict(rows)
        missing = [r.line for r in records if _slice_value(by_line[r.line], slice_key) is None]
        if missing:
            listed = ", ".join(str(n) for n in missing[:10]) + (" …" if len(missing) > 10 else "")
            raise InitError(
                f"{path}: {len(missing)} row(s) have no {slice_key!r} field (as a key, or in `metadata`/"
                f"`tags`): line(s) {listed}; every row needs its slice (or leave out --slice-key)"
            )
        records = [
            Record(**{**r.__dict__, "slice": _slice_value(by_line[r.line], slice_key)}) for r in records
        ]
    return records, slice_key, detected


def detect_task(records: Sequence[Record]) -> Task:
    """classification when the outputs are labels: pairs under a `label` key, or a few distinct short
    outputs (at most 20, at most a quarter of the rows, at most 4 words each); chat otherwise."""
    if all(r.shape == "pair" and r.output_key == "label" for r in records):
        return "classification"
    answers = Counter(r.answer for r in records)
    short = all(len(a.split()) <= 4 for a in answers)
    if short and len(answers) <= min(20, max(2, len(records) // 4)):
        return "classification"
    return "chat"


# ------------------------------------------------------------------------------------------ splitting


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def split_records(
    records: Sequence[Record], seed: int, holdout: float = HOLDOUT
) -> tuple[list[Record], list[Record], list[str]]:
    """(train, held-out, warnings): per slice, a deterministic `holdout` share (at least 2) of the prompts
    is held out; every copy of a prompt lands on the same side. Slices under `MIN_SLICE_FOR_SUITE`
    examples are trained on only."""
    groups: dict[str | None, dict[str, list[Record]]] = {}
    for record in records:
        groups.setdefault(record.slice, {}).setdefault(_norm(record.prompt), []).append(record)
    train: list[Record] = []
    held: list[Record] = []
    warnings: list[str] = []
    for name in sorted(groups, key=lambda s: "" if s is None else s):
        by_prompt = groups[name]
        size = sum(len(v) for v in by_prompt.values())
        if size < MIN_SLICE_FOR_SUITE:
            warnings.append(
                f"slice {name!r} has {size} example(s): all used for training, none in the suites"
            )
            train.extend(r for v in by_prompt.values() for r in v)
            continue
        want = max(2, round(holdout * size))
        order = sorted(
            by_prompt, key=lambda p: hashlib.sha256(f"{seed}\x00{name}\x00{p}".encode()).hexdigest()
        )
        taken = 0
        for prompt in order:
            bucket = by_prompt[prompt]
            if taken < want and size - taken - len(bucket) >= 1:
                held.extend(bucket)
                taken += len(bucket)
            else:
                train.extend(bucket)
        if taken == 0:
            warnings.append(f"slice {name!r}: every example repeats one prompt; none could be held out")
    train.sort(key=lambda r: r.line)
    held.sort(key=lambda r: r.line)
    return train, held, warnings


# ------------------------------------------------------------------------------------------ writing


def _y(value: Any) -> str:
    """A YAML value (JSON is valid YAML flow style: strings quoted, lists inline)."""
    return json.dumps(value, ensure_ascii=False)


def _block(mapping: dict[str, Any]) -> str:
    return yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True, width=110)


def _classification_system(labels: Sequence[str]) -> str:
    return (
        f"Classify the message into exactly one of these labels: {', '.join(labels)}. "
        "Reply with the label only."
    )


def _shared_system(records: Sequence[Record]) -> tuple[str | None, bool]:
    """(the one system prompt all records share, or None; whether records differ)."""
    systems = {r.system for r in records}
    if len(systems) == 1:
        return next(iter(systems)), False
    return None, True


def _chat_record(record: Record, task: Task, labels: Sequence[str]) -> dict[str, Any]:
    system = _classification_system(labels) if task == "classification" else record.system
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend({"role": role, "content": content} for role, content in record.history)
    messages.append({"role": "user", "content": record.prompt})
    messages.append({"role": "assistant", "content": record.answer})
    return {"messages": messages}


def _suite_row(record: Record, task: Task, per_row_system: bool) -> dict[str, Any]:
    if task == "classification":
        row: dict[str, Any] = {"id": record.id, "text": record.prompt, "label": record.answer}
    else:
        row = {
            "id": record.id,
            "question": record.prompt,
            "answer": record.answer,
            "reference": record.reference or record.answer,
        }
        if per_row_system:
            row["system"] = record.system or ""
    if record.slice is not None:
        row["slice"] = record.slice
    return row


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _margin(n: int) -> float:
    """The regression suite's non-inferiority margin for n examples: about the half-width of a paired
    bootstrap 95 % interval when ~15-20 % of answers change (the demo measured 0.10-0.12 on 56 pairs)."""
    return float(min(0.3, max(0.05, round(1.1 / math.sqrt(max(n, 1)), 2))))


def _choose_metric(task: Task, records: Sequence[Record]) -> tuple[list[str], str, str, str]:
    """(suite metrics, primary metric, live scorer metric, why)."""
    if task == "classification":
        return (
            ["accuracy", "f1"],
            "accuracy",
            "exact_match",
            "classification: accuracy of the label the answer names first (the shipped `accuracy` "
            "metric, as in evals/suites/intents.yaml; macro-F1 reported too); live traffic is scored "
            "with exact_match against the label a request or its feedback carries (tag `label`)",
        )
    refs = [r.reference or r.answer for r in records]
    words = statistics.median(len(r.split()) for r in refs)
    keyed = sum(1 for r in records if r.reference)
    if keyed == len(records):
        return (
            ["contains_answer", "rougeL"],
            "contains_answer",
            "contains_answer",
            "chat with a short `reference` in every record: contains_answer (the answer must contain "
            "the reference, whole words), rougeL against it reported too",
        )
    if words <= SHORT_ANSWER_WORDS:
        return (
            ["contains_answer", "exact_match"],
            "contains_answer",
            "contains_answer",
            f"chat with short reference answers (median {words:g} word(s)): contains_answer (the answer "
            "must contain the reference, whole words), exact_match reported too",
        )
    return (
        ["rougeL", "contains_answer"],
        "rougeL",
        "token_f1",
        f"chat with long reference answers (median {words:g} word(s)): contains_answer would need the "
        "whole answer word for word, so rougeL (word overlap) decides; live traffic is scored with "
        "token F1. Add a short `reference` field (the key fact) to each record to gate on "
        "contains_answer instead",
    )


def _max_seq_length(records: Sequence[Record], base: int) -> int:
    """The recipe's max_seq_length, raised to fit the longest example (~3 characters per token plus the
    chat template's overhead), in steps of 64, at most 2048."""
    longest = 0
    for r in records:
        chars = len(r.prompt) + len(r.answer) + len(r.system or "") + sum(len(c) for _, c in r.history)
        longest = max(longest, chars // 3 + 12 * (3 + len(r.history)))
    need = 64 * math.ceil(longest / 64)
    return int(min(2048, max(base, need)))


def _suite_yaml(
    *,
    name: str,
    role: Literal["target", "regression"],
    task: Task,
    description: str,
    comment: str,
    labels: Sequence[str],
    system: str | None,
    per_row_system: bool,
    metrics: Sequence[str],
    primary: str,
    has_slices: bool,
    n: int,
) -> str:
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines += [
        f"name: {name}",
        f"description: {_y(description)}",
        f"task: {'classification' if task == 'classification' else 'chat_qa'}",
    ]
    if task == "classification":
        lines.append(f"labels: {_y(list(labels))}")
    lines += [
        "dataset:",
        f"  path: {role}.jsonl            # relative to this file",
        f"  reference_column: {'label' if task == 'classification' else 'reference'}",
        "  split_column: null           # every row is an eval row (none is in data/train.jsonl)",
    ]
    if has_slices:
        lines.append("slice_column: slice              # results per slice")
    lines.append("prompt:")
    if task == "classification":
        lines.append(f"  system: {_y(_classification_system(labels))}")
        lines += ['  template: "{{ text }}"', '  answer: "{{ label }}"']
        max_tokens = 8
    else:
        if per_row_system:
            lines.append('  system: "{{ system }}"          # each example\'s own system prompt')
        elif system:
            lines.append(f"  system: {_y(system)}")
        lines += ['  template: "{{ question }}"', '  answer: "{{ answer }}"']
        max_tokens = 128 if primary == "rougeL" else 64
    lines.append(f"generation: {{max_tokens: {max_tokens}, temperature: 0.0}}")
    lines.append(f"metrics: {_y(list(metrics))}")
    lines.append(f"primary_metric: {primary}")
    if role == "target":
        lines.append(
            f"gate: {{role: target, metric: {primary}, min_improvement: 0.0}}"
            "   # the challenger must be better here (95 % CI above 0)"
        )
    else:
        lines.append(
            f"gate: {{role: regression, metric: {primary}, margin: {_margin(n)}}}"
            f"   # may be at most this much worse ({n} examples: ~ the CI half-width)"
        )
    return "\n".join(lines) + "\n"


def _header(text: str) -> str:
    return "\n".join(f"# {line}" if line else "#" for line in text.strip("\n").splitlines()) + "\n"


def _check_folder(folder: Path, force: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise InitError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise InitError(
            f"{folder} exists and is not empty; choose another --dir, or --force to overwrite the files "
            "tuneloop init writes there (other files are left alone)"
        )


def _validate_adapter(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,55}", name):
        raise InitError(
            f"--adapter {name!r}: use 1-56 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )


@dataclass(frozen=True)
class _Split:
    """Which records train the first adapter and which are held out, for which suite."""

    slice_sizes: Counter[str | None]
    named: list[str]
    """The named slices, sorted."""
    target_slice: str | None
    train: list[Record]
    held: list[Record]
    target: list[Record]
    regression: list[Record]

    def regression_size(self, slice_name: str) -> int:
        return sum(1 for r in self.regression if r.slice == slice_name)


@dataclass(frozen=True)
class _ProjectPlan:
    """Everything `scaffold` decides before it writes a file."""

    folder: Path
    records: list[Record]
    slice_key: str | None
    slice_key_detected: bool
    task: Task
    labels: list[str]
    split: _Split
    warnings: list[str]
    metrics: list[str]
    primary: str
    live_metric: str
    metric_reason: str
    system: str | None
    per_row_system: bool
    recipe: dict[str, Any]


@dataclass
class _ProjectFolder:
    """The folder being written, and every file written into it (for `InitResult.files`)."""

    path: Path
    written: list[Path] = field(default_factory=list)

    def put(self, rel: str, text: str) -> None:
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.written.append(path)

    def put_jsonl(self, rel: str, rows: Sequence[dict[str, Any]]) -> None:
        _write_jsonl(self.path / rel, rows)
        self.written.append(self.path / rel)


def scaffold(opts: InitOptions) -> InitResult:
    """Read the examples, split them, write the project folder and load every file back.

    Raises InitError (bad data, bad options, a non-empty folder without `force`, or a written file that
    does not load: the loader's message is kept)."""
    plan = _plan_project(opts)
    plan.folder.mkdir(parents=True, exist_ok=True)
    folder = _ProjectFolder(plan.folder)
    _write_data(folder, plan)
    _write_suite_specs(folder, opts, plan)
    _write_configs(folder, opts, plan)
    result = _init_result(opts, plan)
    folder.put("README.md", _readme(result, opts.data.name))
    result.files = sorted(folder.written)
    validate_project(plan.folder)
    return result


def _plan_project(opts: InitOptions) -> _ProjectPlan:
    """Check the options and folder, read the data, then decide task, labels, split, metrics and recipe."""
    _validate_adapter(opts.adapter)
    folder = (opts.folder or Path(f"{opts.adapter}-loop")).expanduser().resolve()
    _check_folder(folder, opts.force)
    records, slice_key, detected = read_examples(opts.data.expanduser(), opts.slice_key)
    task: Task = opts.task or detect_task(records)
    labels = sorted({r.answer for r in records}) if task == "classification" else []
    if task == "classification" and len(labels) < 2:
        raise InitError(f"{opts.data}: classification needs at least 2 labels, found {labels}")
    split, warnings = _split(opts, records, slice_key)
    metrics, primary, live_metric, metric_reason = _choose_metric(task, records)
    system, per_row_system = _shared_system(records) if task == "chat" else (None, False)
    multi_turn = sum(1 for r in split.held if r.history)
    if multi_turn:
        warnings.append(
            f"{multi_turn} held-out record(s) are multi-turn: the suites ask only their last user turn"
        )
    return _ProjectPlan(
        folder=folder,
        records=records,
        slice_key=slice_key,
        slice_key_detected=detected,
        task=task,
        labels=labels,
        split=split,
        warnings=warnings,
        metrics=metrics,
        primary=primary,
        live_metric=live_metric,
        metric_reason=metric_reason,
        system=system,
        per_row_system=per_row_system,
        recipe=_retrain_recipe(records),
    )


def _split(opts: InitOptions, records: list[Record], slice_key: str | None) -> tuple[_Split, list[str]]:
    """Hold out examples: the target slice's for the target suite, the others' for the regression suite."""
    slice_sizes = Counter(r.slice for r in records)
    named = sorted(s for s in slice_sizes if s is not None)
    target_slice = _target_slice(opts, slice_key, slice_sizes, named)
    train, held, warnings = split_records(records, opts.seed)
    target = [r for r in held if target_slice is not None and r.slice == target_slice]
    regression = [r for r in held if target_slice is None or r.slice != target_slice]
    if len(named) == 1:
        warnings.append(f"only one slice ({named[0]!r}): no target suite, the gate checks regression only")
    if not regression:
        raise InitError("no examples left for the regression suite: add examples of other slices")
    for label, suite in (("target", target), ("regression", regression)):
        if suite and len(suite) < 10:
            warnings.append(
                f"the {label} suite has {len(suite)} examples: too few for the gate to show a difference "
                "with confidence; more examples"
                + (" of that slice" if label == "target" else "")
                + " make it decisive"
            )
    return _Split(slice_sizes, named, target_slice, train, held, target, regression), warnings


def _target_slice(
    opts: InitOptions, slice_key: str | None, slice_sizes: Counter[str | None], named: list[str]
) -> str | None:
    """The slice the loop must improve: the one asked for, else the smallest eligible one (2+ slices)."""
    target_slice: str | None = None
    if opts.target_slice is not None:
        if slice_key is None:
            raise InitError("--target-slice needs slices: give --slice-key (the field naming each slice)")
        if opts.target_slice not in slice_sizes:
            from common.settings import did_you_mean

            raise InitError(
                f"--target-slice {opts.target_slice!r} is not a slice of {slice_key!r}"
                f"{did_you_mean(opts.target_slice, named)} (slices: {', '.join(named)})"
            )
        target_slice = opts.target_slice
    elif len(named) >= 2:
        eligible = [s for s in named if slice_sizes[s] >= MIN_SLICE_FOR_SUITE] or named
        target_slice = min(eligible, key=lambda s: (slice_sizes[s], s))
    if target_slice is not None and slice_sizes[target_slice] < MIN_SLICE_FOR_SUITE:
        raise InitError(
            f"target slice {target_slice!r} has {slice_sizes[target_slice]} example(s); "
            f"at least {MIN_SLICE_FOR_SUITE} are needed to hold some out for the target suite"
        )
    return target_slice


def _retrain_recipe(records: Sequence[Record]) -> dict[str, Any]:
    """The shipped recipe, its max_seq_length fitted to the data and its runs kept in the state folder."""
    from common.settings import read_yaml_mapping
    from monitoring.spec import DEFAULT_RECIPE

    recipe = read_yaml_mapping(DEFAULT_RECIPE, what="training recipe")
    seq = _max_seq_length(records, int(recipe.get("data", {}).get("max_seq_length", 192)))
    recipe.setdefault("data", {})["max_seq_length"] = seq
    recipe["output"] = {"runs_dir": f"{STATE_DIR}/runs"}
    return recipe


def _write_data(folder: _ProjectFolder, plan: _ProjectPlan) -> None:
    """data/train.jsonl (chat records) and the suites' held-out rows; a stale target suite is removed."""
    split, task = plan.split, plan.task
    folder.put_jsonl("data/train.jsonl", [_chat_record(r, task, plan.labels) for r in split.train])
    if split.target:
        folder.put_jsonl(
            "suites/target.jsonl", [_suite_row(r, task, plan.per_row_system) for r in split.target]
        )
    else:
        for stale in ("suites/target.yaml", "suites/target.jsonl"):
            (folder.path / stale).unlink(missing_ok=True)  # from an earlier init with --force
    folder.put_jsonl(
        "suites/regression.jsonl", [_suite_row(r, task, plan.per_row_system) for r in split.regression]
    )


def _write_suite_specs(folder: _ProjectFolder, opts: InitOptions, plan: _ProjectPlan) -> None:
    """suites/target.yaml (when there is a target slice) and suites/regression.yaml, each commented."""
    origin = f"from {opts.data.name} (seed {opts.seed}); none of its prompts is in data/train.jsonl."
    split, slice_key, target_slice = plan.split, plan.slice_key, plan.split.target_slice
    if split.target:
        comment = (
            f"Target suite: {len(split.target)} held-out examples of the slice "
            f"{slice_key}={target_slice!r}, "
            f"{origin}\n"
            "A retrained adapter is promoted only if it is better here than the champion. The "
            "slice's other examples are in data/train.jsonl:\nthe first adapter learns it too; the "
            "loop retrains when its traffic drifts or its answers get corrected.\n"
            f"Run: tuneloop eval run suites/target.yaml --model {opts.adapter} --config settings.yaml"
        )
        description = f"Held-out {slice_key}={target_slice} examples: the slice the loop must improve."
        folder.put("suites/target.yaml", _role_suite_yaml(opts, plan, "target", description, comment))
    if slice_key is None:
        others = "all slices (the data has none)"
    else:
        others = "every slice" if target_slice is None else f"every slice but {target_slice!r}"
    what = "label" if plan.task == "classification" else "answer"
    comment = (
        f"Regression suite: {len(split.regression)} held-out examples of {others}, {origin}\n"
        f"A retrained adapter must not get worse here by more than gate.margin ({what}s checked "
        f"with {plan.primary}).\n"
        f"Run: tuneloop eval run suites/regression.yaml --model {opts.adapter} --config settings.yaml"
    )
    description = f"Held-out examples of {others}: must not get worse."
    folder.put("suites/regression.yaml", _role_suite_yaml(opts, plan, "regression", description, comment))


def _role_suite_yaml(
    opts: InitOptions,
    plan: _ProjectPlan,
    role: Literal["target", "regression"],
    description: str,
    comment: str,
) -> str:
    """The suite YAML of one role (target or regression), with what the plan decided for both."""
    return _suite_yaml(
        name=f"{opts.adapter}_{role}",
        role=role,
        task=plan.task,
        description=description,
        comment=comment,
        labels=plan.labels,
        system=plan.system,
        per_row_system=plan.per_row_system,
        metrics=plan.metrics,
        primary=plan.primary,
        has_slices=plan.slice_key is not None,
        n=len(plan.split.target if role == "target" else plan.split.regression),
    )


def _write_configs(folder: _ProjectFolder, opts: InitOptions, plan: _ProjectPlan) -> None:
    """recipe.yaml, train.yaml, settings.yaml and loop.yaml."""
    split = plan.split
    folder.put("recipe.yaml", _recipe_yaml(plan.recipe))
    folder.put("train.yaml", _train_yaml(opts.adapter, plan.recipe))
    folder.put("settings.yaml", _settings_yaml(plan.folder / STATE_DIR))
    small_slices = [s for s in split.named if s != split.target_slice and split.regression_size(s) < 30]
    folder.put(
        "loop.yaml",
        _loop_yaml(
            adapter=opts.adapter,
            slice_key=plan.slice_key,
            target_slice=split.target_slice,
            has_target=bool(split.target),
            live_metric=plan.live_metric,
            per_slice=bool(split.named) and not small_slices,
            data_name=opts.data.name,
        ),
    )


def _init_result(opts: InitOptions, plan: _ProjectPlan) -> InitResult:
    """The summary of what was decided (files are added once written)."""
    split = plan.split
    return InitResult(
        folder=plan.folder,
        task=plan.task,
        metric=plan.primary,
        metric_reason=plan.metric_reason,
        slice_key=plan.slice_key,
        slice_key_detected=plan.slice_key_detected,
        target_slice=split.target_slice if split.target else None,
        n_examples=len(plan.records),
        n_train=len(split.train),
        n_target=len(split.target),
        n_regression=len(split.regression),
        slices={
            (s if s is not None else "(all)"): (
                sum(1 for r in split.train if r.slice == s),
                sum(1 for r in split.held if r.slice == s),
            )
            for s in sorted(split.slice_sizes, key=lambda x: "" if x is None else x)
        },
        labels=plan.labels,
        warnings=plan.warnings,
        commands=_commands(opts.adapter, bool(split.target)),
    )


def _commands(adapter: str, has_target: bool) -> list[tuple[str, str]]:
    suites = ["regression"] + (["target"] if has_target else [])
    cmds = [
        (
            "start the service (keep it running; another terminal for the rest)",
            "tuneloop serve --config settings.yaml",
        ),
        (
            "train the first adapter and register it (prints NAME@VERSION)",
            f"tuneloop train train.yaml --register {adapter} --config settings.yaml",
        ),
        (
            "make it the champion clients get with model: " + adapter,
            f"tuneloop adapters alias {adapter} champion VERSION --config settings.yaml",
        ),
    ]
    cmds += [
        (
            f"evaluate it on the {s} suite",
            f"tuneloop eval run suites/{s}.yaml --model {adapter} --config settings.yaml",
        )
        for s in suites
    ]
    cmds += [
        ("check the loop spec", "tuneloop loop validate loop.yaml"),
        ("run the loop next to the service", "tuneloop loop --spec loop.yaml --config settings.yaml"),
        ("see its state", "tuneloop status --spec loop.yaml --config settings.yaml"),
    ]
    return cmds


def _recipe_yaml(recipe: dict[str, Any]) -> str:
    return _header(
        """
The retraining recipe the loop uses (loop.yaml: recipe.training): a training-config template.
It is a copy of the shipped monitoring/recipes/lora_retrain.yaml (LoRA r=16 on every linear layer, packed
rows, 3 epochs at 2e-3: measured to learn a new slice from a few dozen corrections on 2 CPU cores in a few
minutes), kept here so you can tune it for your task without touching the package. data.max_seq_length
was raised, if needed, to fit your longest example; runs go to .tuneloop/runs (relative to this file).
The loop fills in name, base_model, init_adapter (the champion), style (sequential) and data.sources (the
drifted slice's corrections + recipe.replay from loop.yaml). Fields: docs/training.md.
To use the shipped recipe instead (and get its updates), delete `training:` under `recipe:` in loop.yaml.
runtime.device auto: a GPU when the Ray cluster has one, else CPU.
"""
    ) + _block(recipe)


def _train_yaml(adapter: str, recipe: dict[str, Any]) -> str:
    config: dict[str, Any] = {"name": f"{adapter}-v1", "style": "sft"}
    config["lora"] = recipe.get("lora", {})
    data = dict(recipe.get("data", {}))
    data["sources"] = [{"path": "data/train.jsonl", "template": "chat"}]
    config["data"] = {"sources": data.pop("sources"), **data}
    config["train"] = {**recipe.get("train", {}), "epochs": 4, "learning_rate": 3.0e-3}
    config["runtime"] = recipe.get("runtime", {})
    config["output"] = recipe.get("output", {})
    return _header(
        f"""
The first '{adapter}' adapter: supervised fine-tuning on data/train.jsonl (the training split of your
examples; the suites' examples are not in it). Same LoRA shape as recipe.yaml (the loop later continues
this adapter with that recipe), 4 epochs at 3e-3 as the demo's first adapter (measured on 2 CPU cores:
the recipe's 3 epochs at 2e-3 are tuned for continuing an adapter, a fresh one needs a little more).
base_model is omitted: `tuneloop train --config settings.yaml` uses the service's base model.
runtime.device auto: a GPU when the Ray cluster (or this machine) has one, else CPU.
data.split.test is 0: the held-out examples already live in suites/.
Run:  tuneloop train train.yaml --register {adapter} --config settings.yaml
"""
    ) + _block(config)


def _settings_yaml(state: Path) -> str:
    return (
        _header(
            f"""
tuneloop settings for this project: pass it with --config settings.yaml to serve, train, adapters, eval,
loop and status. The service's state (adapter registry, request-log database, models) lives in
{STATE_DIR}/ inside this folder.
serving.home is written as an absolute path: the serving settings do not resolve it against this file's
folder (a relative home would follow the working directory). After moving the folder, fix it here (or run
tuneloop init again with --force).
Every field: tuneloop/settings.py and serving/config.py.
"""
        )
        + f"serving:\n  home: {_y(str(state))}\n"
        + "  base_model: default     # SmolLM2-135M-Instruct, or a local HF model folder\n"
        + "host: 127.0.0.1\nport: 8000\n"
    )


def _loop_yaml(
    *,
    adapter: str,
    slice_key: str | None,
    target_slice: str | None,
    has_target: bool,
    live_metric: str,
    per_slice: bool,
    data_name: str,
) -> str:
    """loop.yaml, commented: what is watched, how a challenger is gated, how it is canaried."""
    head = _header(
        f"""
The loop spec for '{adapter}' (written by tuneloop init from {data_name}). Every field: docs/loop.md.
Relative paths are relative to this file, so the folder works from any working directory.
Check it:        tuneloop loop validate loop.yaml
Run the loop:    tuneloop loop --spec loop.yaml --config settings.yaml   (with `tuneloop serve` running)
README.md lists every command in order (serve, train, alias, eval, loop).
"""
    )
    lines = [
        head,
        *_loop_watch_lines(adapter, slice_key, live_metric),
        *_loop_gate_lines(slice_key, target_slice, has_target, per_slice),
        *_LOOP_CANARY_LINES,
        f"state_dir: ./{STATE_DIR}/loop      # eval results and reports of the loop's runs",
    ]
    return "\n".join(lines) + "\n"


def _loop_watch_lines(adapter: str, slice_key: str | None, live_metric: str) -> list[str]:
    """What the loop watches: the adapter, its slices, the traffic windows, the policy and the scorers."""
    lines = [f"adapter: {adapter}                # clients send model: {adapter} (its champion)"]
    lines.append("service_url: http://127.0.0.1:8000   # the running service (settings.yaml host/port)")
    if slice_key is not None:
        lines.append(
            f"slice_key: {slice_key}       # requests carry metadata.{slice_key} (or feedback tags): the "
            "slice that grew most is retrained"
        )
    else:
        lines.append("# slice_key: topic     # no slices in the data: the loop retrains on all feedback")
    return lines + [
        "windows:                       # prompts compared: the champion's first vs its newest traffic",
        "  reference_size: 200",
        "  live_size: 200",
        "  min_quality_scores: 20",
        "  check_interval_s: 15",
        "policy: default                # monitoring/policies/default.yaml: MMD p <= 0.01 on 200 prompts,",
        "                               # or a quality drop >= 0.10; `demo` reacts on 40 prompts (trials),",
        "                               # `production` is stricter; or a policy file / inline mapping",
        "scorers:                       # scores on live traffic (docs/loop.md#scorers)",
        "  - feedback",
        f"  - {{kind: reference, metric: {live_metric}"
        + (", tag_keys: [label, reference]}" if live_metric == "exact_match" else "}")
        + ("   # the answer vs metadata.label / feedback tags.label" if live_metric == "exact_match" else ""),
        "  - empty",
        "  - refusal",
        "quality_scorer: reference      # the score stream watched for a quality drop",
    ]


def _loop_gate_lines(
    slice_key: str | None, target_slice: str | None, has_target: bool, per_slice: bool
) -> list[str]:
    """How a challenger is made and gated: the suites, the retraining recipe and the gate."""
    lines = ["suites:                        # the offline gate: challenger vs champion (paired bootstrap)"]
    if has_target:
        lines.append(
            f"  target: ./suites/target.yaml          # held-out {slice_key}={target_slice}: must improve"
        )
    else:
        lines.append("  # target: ./suites/target.yaml        # no target slice (no slices, or one): add one")
    return lines + [
        "  regression: ./suites/regression.yaml  # held-out examples of the other slices: must not regress",
        "recipe:",
        "  training: ./recipe.yaml      # the retraining recipe (a copy of the shipped one; see its header)",
        "  replay: ./data/train.jsonl   # the first adapter's training data, mixed in against forgetting",
        "  replay_weight: 2.0           # twice: a few dozen corrections of one slice otherwise pull the",
        "                               # other slices' answers to it (measured: examples/ticket_triage)",
        "  min_corrections: 20          # corrected answers of the drifted slice before training starts;",
        "                               # a triggered run waits for them (wait_for_corrections_s)",
        "gate:",
        "  margin: null                 # null: the regression suite's gate.margin (sized to its examples)",
        f"  regression_per_slice: {'true' if per_slice else 'false'}"
        + (
            ""
            if per_slice
            else "   # slices have < 30 held-out examples: too few to show non-inferiority one by one"
        ),
    ]


_LOOP_CANARY_LINES = (
    "canary:                        # live: the challenger's share grows step by step, each step",
    "                               # decided by an always-valid sequential test (docs/loop.md)",
    "  steps: [0.1, 0.25, 0.5]      # then promoted (100 %)",
    "  alpha: 0.05",
    "  mde: 0.1                     # a challenger 10 points worse must not be promoted (5 % error);",
    "                               # the canary's length grows as 1/mde^2",
    "  min_requests_per_step: 20    # scored challenger requests before a step may advance",
    "  max_requests_per_step: 100   # an early step advances after this many without evidence of harm",
    "  guardrails: {max_error_rate: 0.05, max_empty_rate: 0.1}   # roll back at once beyond these",
    "  timeout_s: 7200",
)
"""loop.yaml's canary section: the steps and the sequential test that decides each one."""


def _readme(result: InitResult, data_name: str) -> str:
    adapter_cmds = "\n".join(f"# {what}\n{cmd}\n" for what, cmd in result.commands)
    slices = "\n".join(f"| {name} | {train} | {held} |" for name, (train, held) in result.slices.items())
    target = (
        f"`suites/target.yaml` ({result.n_target} held-out examples of {result.slice_key}="
        f"{result.target_slice}: the slice a retraining must improve)"
        if result.target_slice
        else "no target suite (no slices): add one when you have examples of the slice to improve"
    )
    tag = f'"{result.slice_key}": ..., ' if result.slice_key else ""
    known = '"label": ...' if result.task == "classification" else '"reference": ...'
    what = "label" if result.task == "classification" else "answer"

    return f"""# {result.folder.name}: a tuneloop loop project

Written by `tuneloop init` from `{data_name}` ({result.n_examples} examples, task: {result.task}).

| file | what |
| --- | --- |
| `loop.yaml` | the loop spec (`tuneloop loop --spec loop.yaml`); fields in docs/loop.md |
| `train.yaml` | the first adapter's training config ({result.n_train} examples) |
| `recipe.yaml` | the retraining recipe the loop uses (copy of the shipped one, yours to tune) |
| `suites/` | {target}; `suites/regression.yaml` ({result.n_regression} held-out examples: must not regress) |
| `data/train.jsonl` | the training split (chat records), also the loop's replay data |
| `settings.yaml` | tuneloop settings; state in `{STATE_DIR}/` |

Suite metric: {result.metric}. {result.metric_reason}.

| slice | train | held out |
| --- | --- | --- |
{slices}

## Commands (run in this folder)

```bash
{adapter_cmds}```

Requests must carry what the loop {"slices and " if result.slice_key else ""}scores by:
`metadata: {{{tag}{known}}}` on chat completions (the right {what}, when known), or
tags and corrections sent later through `POST /v1/feedback` (docs/loop.md: labels that arrive late).
"""


def validate_project(folder: Path) -> None:
    """Load every written file with the loader its command uses; InitError with the loader's message."""
    from common.settings import SettingsError
    from evals.errors import EvalError
    from evals.suite import load_suite
    from monitoring.spec import load_spec
    from training.config import load_config, parse_config
    from tuneloop.settings import load_settings

    try:
        spec = load_spec(folder / "loop.yaml")
        load_config(folder / "train.yaml")
        for suite in spec.suites.names():
            load_suite(suite, base_dir=folder)
        template = spec.recipe.template()
        data = {**template.get("data", {}), "sources": [{"path": str(folder / "data" / "train.jsonl")}]}
        parse_config({**template, "name": "recipe-check", "data": data})
        load_settings(folder / "settings.yaml")
    except (SettingsError, EvalError) as exc:
        raise InitError(f"the generated project does not load (a tuneloop init bug): {exc}") from exc
