"""Dataset sources: read raw rows from files, local Hugging Face dataset folders and the request log.

Each kind registers a reader (`register_source`), so a new kind is one function. Readers return
`RawRows` (plain dicts plus the column names) and raise `DataError` naming the file / table and the cause:
missing, empty, not UTF-8 (with the byte offset and line), malformed JSON (with the line), no rows.

The request log's chat requests become `messages` rows ending with the trained answer; a request with tools
also gives the `tools` and `tool_choice` it was served with, and its answer turn the served tool calls (or a
correction's), so tool-calling traffic trains like any other (`training.data.tools`); preference / kto
records from such requests carry the same tools, and answers that are tool calls
(`training.data.preference`).

`peek_columns(source)` reads only the header / first rows, so preflight can reject wrong column names
without reading the whole file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.db import make_engine
from common.log_schema import feedback_table, merged_tags, requests_table
from training.config import FileSource, HFDatasetSource, RequestLogSource, SourceConfig
from training.data.example import RowRejected
from training.data.tools import calls_from_correction, parse_tool_choice, parse_tools, served_calls_message
from training.errors import DataError

__all__ = [
    "RawRows",
    "check_utf8",
    "file_format",
    "peek_columns",
    "read_source",
    "register_source",
    "source_label",
]

_TEXT_FORMATS = {"jsonl", "json", "csv"}
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(slots=True)
class RawRows:
    """Rows of one source as read (before formatting/cleaning)."""

    source: str
    rows: list[dict[str, Any]]
    columns: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


Reader = Callable[[Any], RawRows]
Peeker = Callable[[Any], list[str]]
_READERS: dict[str, tuple[Reader, Peeker]] = {}


def register_source(kind: str, peek: Peeker) -> Callable[[Reader], Reader]:
    """Register a reader (and a cheap column peeker) for a source `kind`."""

    def deco(fn: Reader) -> Reader:
        _READERS[kind] = (fn, peek)
        return fn

    return deco


def source_label(source: SourceConfig, index: int) -> str:
    """The source's name in the data card: its `name`, else the file name / table, else its position."""
    if source.name:
        return source.name
    if isinstance(source, FileSource | HFDatasetSource):
        return source.path.stem if source.path.suffix else source.path.name
    return f"request_log_{index}"


def read_source(source: SourceConfig, label: str) -> RawRows:
    reader, _ = _READERS[source.kind]
    raw = reader(source)
    raw.source = label
    return raw


def peek_columns(source: SourceConfig) -> list[str]:
    """Column names of a source, reading as little as possible (raises DataError if unreadable/empty)."""
    _, peek = _READERS[source.kind]
    return peek(source)


# ---------------------------------------------------------------------------------------------- files


def file_format(source: FileSource) -> str:
    if source.format != "auto":
        return source.format
    fmt = _EXTENSIONS.get(source.path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {source.path} from its extension; set format: jsonl|json|csv|parquet"
        )
    return fmt


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"dataset file not found: {path}")
    if not path.is_file():
        raise DataError(f"dataset path is not a file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"dataset file is empty: {path}")


def check_utf8(path: Path, limit: int | None = None) -> None:
    """Raise DataError naming the byte offset and line of the first invalid UTF-8 sequence."""
    data = path.read_bytes() if limit is None else path.open("rb").read(limit)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if limit is not None and exc.start >= len(data) - 4:
            return  # a multi-byte character cut by the read limit
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
            "re-encode the file as UTF-8"
        ) from None


def _read_text(path: Path) -> str:
    check_utf8(path)
    return path.read_text(encoding="utf-8")


def _iter_jsonl(path: Path, text: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path} line {number} is a JSON {type(row).__name__}, expected an object per line"
            )
        yield row


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of objects (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list of objects")
    return data


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _read_file(source: FileSource) -> RawRows:
    path = source.path
    _check_file(path)
    fmt = file_format(source)
    rows: list[dict[str, Any]]
    if fmt == "jsonl":
        rows = list(_iter_jsonl(path, _read_text(path)))
    elif fmt == "json":
        rows = _json_rows(path, _read_text(path))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        rows = [dict(r) for r in reader]
        if reader.fieldnames is None:
            raise DataError(f"{path} has no CSV header row")
    else:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    if not rows:
        raise DataError(f"dataset file has no rows: {path}")
    return RawRows(
        source=path.name, rows=rows, columns=_columns(rows), meta={"path": str(path), "format": fmt}
    )


def _peek_file(source: FileSource) -> list[str]:
    path = source.path
    _check_file(path)
    fmt = file_format(source)
    if fmt in _TEXT_FORMATS:
        check_utf8(path)
    if fmt == "jsonl":
        first = next(_iter_jsonl(path, path.read_text(encoding="utf-8")), None)
        if first is None:
            raise DataError(f"dataset file has no rows: {path}")
        return list(first)
    if fmt == "csv":
        header = next(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")), None)
        if not header:
            raise DataError(f"{path} has no CSV header row")
        return header
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:
            raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    rows = _json_rows(path, path.read_text(encoding="utf-8"))
    if not rows:
        raise DataError(f"dataset file has no rows: {path}")
    return _columns(rows[:100])


register_source("file", _peek_file)(_read_file)


# ------------------------------------------------------------------------------------ HF dataset folders


def _load_hf(source: HFDatasetSource) -> Any:
    import datasets

    path = source.path
    if not path.is_dir():
        raise DataError(f"Hugging Face dataset folder not found: {path}")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path} is not a dataset folder written by save_to_disk: {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise DataError(f"{path} has no split {source.split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[source.split]
    return loaded


def _read_hf(source: HFDatasetSource) -> RawRows:
    dataset = _load_hf(source)
    if len(dataset) == 0:
        raise DataError(f"dataset folder has no rows: {source.path}")
    rows = dataset.to_list()
    return RawRows(
        source=source.path.name,
        rows=rows,
        columns=list(dataset.column_names),
        meta={"path": str(source.path)},
    )


def _peek_hf(source: HFDatasetSource) -> list[str]:
    dataset = _load_hf(source)
    if len(dataset) == 0:
        raise DataError(f"dataset folder has no rows: {source.path}")
    return list(dataset.column_names)


register_source("hf_dataset", _peek_hf)(_read_hf)


# ------------------------------------------------------------------------------------------ request log


def _engine(url: str) -> Any:
    try:
        return make_engine(url)
    except Exception as exc:
        raise DataError(f"request log: bad database URL {url!r}: {exc}") from None


def _check_tables(engine: Any, url: str) -> None:
    import sqlalchemy as sa

    try:
        names = set(sa.inspect(engine).get_table_names())
    except Exception as exc:
        raise DataError(
            f"request log: cannot connect to {engine.url.render_as_string(hide_password=True)}: {exc}"
        ) from None
    missing = {"requests", "feedback"} - names
    if missing:
        raise DataError(f"request log {url!r} has no table(s) {', '.join(sorted(missing))}")


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _request_log_query(source: RequestLogSource) -> Any:
    """Served, non-shadow requests joined with their corrections (and acceptances), newest first."""
    import sqlalchemy as sa

    r, f = requests_table, feedback_table
    qualifies = sa.and_(f.c.correction.is_not(None), f.c.correction != "")
    if source.records in ("preference", "kto"):  # negatives count too
        qualifies = sa.or_(
            qualifies,
            f.c.thumbs != 0,
            f.c.rating >= source.min_rating,
            f.c.rating <= source.max_rejected_rating,
        )
    elif source.include_accepted:
        qualifies = sa.or_(qualifies, f.c.thumbs > 0, f.c.rating >= source.min_rating)
    conditions = [r.c.status_code == 200, r.c.shadow_of.is_(None), qualifies]
    if source.since is not None:
        conditions.append(r.c.created_at >= _as_utc(source.since))
    if source.until is not None:
        conditions.append(r.c.created_at < _as_utc(source.until))
    if source.served_name is not None:
        conditions.append(r.c.served_name == source.served_name)
    if source.served_version is not None:
        conditions.append(r.c.served_version == source.served_version)
    return (
        sa.select(
            r.c.id,
            r.c.created_at,
            r.c.endpoint,
            r.c.prompt,
            r.c.response,
            r.c.served_name,
            r.c.served_version,
            r.c.tags,
            r.c.tools,
            r.c.tool_calls,
            f.c.correction,
            f.c.thumbs,
            f.c.rating,
            f.c.tags.label("feedback_tags"),
            f.c.created_at.label("feedback_at"),
        )
        .select_from(r.join(f, f.c.request_id == r.c.id))
        .where(*conditions)
        .order_by(r.c.created_at.desc(), r.c.id, f.c.created_at)
    )


def _read_request_log(source: RequestLogSource) -> RawRows:
    engine = _engine(source.database_url)
    try:
        _check_tables(engine, source.database_url)
        with engine.connect() as conn:
            records = [dict(r._mapping) for r in conn.execute(_request_log_query(source))]
    finally:
        engine.dispose()
    database = engine.url.render_as_string(hide_password=True)
    if source.records in ("preference", "kto"):
        return _preference_records(source, records, database)

    # Tags sent with the feedback (labels known after the answer) win over the request's own.
    late: dict[str, list[Any]] = {}
    for rec in records:
        late.setdefault(rec["id"], []).append(rec.get("feedback_tags"))
    # One row per request: the latest correction wins over acceptance.
    by_id: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for rec in records:
        tags = merged_tags(rec.get("tags"), late[rec["id"]])
        if any(tags.get(k) != v for k, v in source.tags.items()):
            continue
        rid = rec["id"]
        if rid not in by_id:
            order.append(rid)
            by_id[rid] = {**rec, "tags": tags}
        elif rec.get("correction"):
            by_id[rid] = {**rec, "tags": tags}
    rows: list[dict[str, Any]] = []
    for rid in order[: source.limit] if source.limit else order:
        rec = by_id[rid]
        target = rec["correction"] if rec.get("correction") else rec.get("response")
        if target is None:
            continue
        row: dict[str, Any] = {
            "request_id": rid,
            "origin": "correction" if rec.get("correction") else "accepted",
        }
        if rec["endpoint"] == "chat.completions":
            try:
                messages = json.loads(rec["prompt"])
            except (TypeError, json.JSONDecodeError):
                messages = None
            if not isinstance(messages, list):
                continue  # an unparseable prompt cannot be replayed; counted as unread
            row["messages"] = [*messages, _answer_message(rec, row)]
        else:
            row["prompt"], row["completion"] = rec["prompt"], target
        rows.append(row)
    if not rows:
        raise DataError(
            f"request log {source.database_url!r} has no corrected or accepted requests matching the filters "
            f"(served_name={source.served_name!r}, tags={source.tags}, since={source.since}, "
            f"until={source.until})"
        )
    return RawRows(
        source="request_log",
        rows=rows,
        columns=_columns(rows),
        meta={"database": database, "qualifying_requests": len(order)},
    )


def _answer_message(rec: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The assistant turn a chat request is trained on; for a request with tools, also puts `tools` and
    `tool_choice` into `row` (see `training.data.tools`).

    The correction when there is one: read as tool calls when it is JSON naming defined functions (for a
    named tool choice: the arguments object), else a text answer - corrections are text. Otherwise the
    served answer: its tool calls as logged (with the text a tool parser left beside them, tool_choice
    auto), or its text. Logged JSON that does not parse is passed on as is: the chat template drops the
    row as `bad_tools` / `bad_tool_calls`."""
    tools, choice = _logged_tools(rec)
    if tools is not None:
        row["tools"], row["tool_choice"] = tools, choice
    correction = rec.get("correction")
    if correction:
        calls = _correction_calls(correction, tools, choice)
        if calls:
            return {"role": "assistant", "content": "", "tool_calls": calls}
        return {"role": "assistant", "content": correction}
    if rec.get("tool_calls"):
        return served_calls_message(rec.get("response"), rec["tool_calls"], choice)
    return {"role": "assistant", "content": rec.get("response")}


def _logged_tools(rec: dict[str, Any]) -> tuple[Any, Any]:
    """(tools, tool_choice) of a logged request (None, None without tools). Serving logs `{"tool_choice",
    "tools"}` as JSON; anything else is passed on as is, for the template to drop as `bad_tools`."""
    if not rec.get("tools"):
        return None, None
    try:
        logged = json.loads(rec["tools"])
    except (TypeError, json.JSONDecodeError):
        logged = None
    if isinstance(logged, dict):
        return logged.get("tools"), logged.get("tool_choice")
    return rec["tools"], None


def _correction_calls(correction: str, tools: Any, choice: Any) -> list[dict[str, Any]] | None:
    """The tool calls a correction states (`calls_from_correction`); None for a text correction, no tools
    or unreadable definitions (the template then drops the row)."""
    if tools is None:
        return None
    try:
        return calls_from_correction(correction, parse_tools(tools), parse_tool_choice(choice))
    except RowRejected:
        return None


def _decoded_prompt(rec: dict[str, Any]) -> list[dict[str, Any]] | str | None:
    """A logged prompt as messages (chat endpoint) or text; None when a chat prompt does not parse."""
    if rec["endpoint"] != "chat.completions":
        return str(rec["prompt"])
    try:
        messages = json.loads(rec["prompt"])
    except (TypeError, json.JSONDecodeError):
        return None
    return messages if isinstance(messages, list) else None


def _preference_records(source: RequestLogSource, records: list[dict[str, Any]], database: str) -> RawRows:
    """records: preference / kto - one FeedbackAnswer per request (latest correction, latest verdict), then
    the rules of `training.data.preference`."""
    from training.data.preference import FeedbackAnswer, kto_rows, preference_rows, verdict

    late: dict[str, list[Any]] = {}
    for rec in records:
        late.setdefault(rec["id"], []).append(rec.get("feedback_tags"))
    merged: dict[str, dict[str, Any]] = {}  # request id -> {rec, correction, verdict}; newest request first
    for rec in records:  # feedback of one request comes oldest first: later rows win
        if any(merged_tags(rec.get("tags"), late[rec["id"]]).get(k) != v for k, v in source.tags.items()):
            continue
        entry = merged.setdefault(rec["id"], {"rec": rec, "correction": None, "verdict": None})
        if rec.get("correction"):
            entry["correction"] = rec["correction"]
        judged = verdict(
            rec.get("thumbs"),
            rec.get("rating"),
            min_rating=source.min_rating,
            max_rejected_rating=source.max_rejected_rating,
        )
        if judged is not None:
            entry["verdict"] = judged
    answers: list[FeedbackAnswer] = []
    unreadable = 0
    for entry in list(merged.values())[: source.limit] if source.limit else merged.values():
        rec = entry["rec"]
        prompt = _decoded_prompt(rec)
        if prompt is None or rec.get("response") is None:
            unreadable += 1
            continue
        tools, choice = _logged_tools(rec)
        correction = entry["correction"]
        answers.append(
            FeedbackAnswer(
                request_id=rec["id"],
                prompt=prompt,
                response=rec["response"],
                correction=correction,
                verdict=entry["verdict"],
                tools=tools,
                tool_choice=choice,
                response_calls=rec.get("tool_calls") or None,
                correction_calls=_correction_calls(correction, tools, choice) if correction else None,
            )
        )
    build = preference_rows if source.records == "preference" else kto_rows
    rows, counts = build(answers, include_accepted=source.include_accepted)
    if not rows:
        hint = (
            "; thumbed-down answers without a correction or an accepted answer to the same prompt make no "
            "pair - style kto trains on them"
            if source.records == "preference" and counts.get("unpaired_rejected")
            else ""
        )
        raise DataError(
            f"request log {source.database_url!r} gives no {source.records} records: {len(answers)} requests "
            f"with feedback matched the filters (served_name={source.served_name!r}, tags={source.tags}, "
            f"since={source.since}, until={source.until}; {dict(counts) or 'nothing usable'}){hint}"
        )
    return RawRows(
        source="request_log",
        rows=rows,
        columns=_columns(rows),
        meta={
            "database": database,
            "records": source.records,
            "requests_with_feedback": len(answers),
            "unreadable_prompts": unreadable,
            **dict(sorted(counts.items())),
        },
    )


def _peek_request_log(source: RequestLogSource) -> list[str]:
    engine = _engine(source.database_url)
    try:
        _check_tables(engine, source.database_url)
    finally:
        engine.dispose()
    if source.records == "preference":
        return ["prompt", "chosen", "rejected"]
    if source.records == "kto":
        return ["prompt", "completion", "label"]
    return ["messages", "prompt", "completion"]


register_source("request_log", _peek_request_log)(_read_request_log)
