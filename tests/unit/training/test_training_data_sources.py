"""Sources: JSONL / JSON / CSV / Parquet files, local HF dataset folders and the request log (SQLite), with
clear errors for missing, empty, non-UTF-8 and malformed inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.log_schema import create_log_tables, feedback_table, requests_table
from training.config import FileSource, HFDatasetSource, RequestLogSource
from training.data.sources import peek_columns, read_source
from training.errors import DataError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_json_csv_parquet_and_hf_folder(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": "one", "label": "a"}, {"text": "two", "label": "b"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "d.csv").write_text("text,label\none,a\ntwo,b\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    sources = [FileSource(path=tmp_path / f"d.{ext}") for ext in ("jsonl", "json", "csv", "parquet")]
    sources.append(HFDatasetSource(path=tmp_path / "hf"))  # type: ignore[arg-type]
    for source in sources:
        raw = read_source(source, "s")
        assert raw.rows == rows, source
        assert peek_columns(source) == ["text", "label"]


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.jsonl", None, "not found"),
        ("empty.jsonl", b"", "is empty"),
        ("blank.jsonl", b"\n\n", "no rows"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', "line 2 is not valid JSON"),
        ("list.jsonl", b'["a", "b"]\n', "expected an object per line"),
        (
            "latin1.csv",
            "text\ncaf\xe9\n".encode("latin-1"),
            "not valid UTF-8: byte 0xe9 at offset 8 (line 2)",
        ),
        ("weird.txt", b"x", "cannot tell the format"),
        ("broken.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ],
)
def test_bad_files_fail_with_the_cause(tmp_path: Path, name: str, content: bytes | None, needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_source(FileSource(path=path), "s")
    assert needle in str(info.value)
    assert str(path) in str(info.value) or needle == "cannot tell the format"


def test_hf_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        read_source(HFDatasetSource(path=tmp_path / "nope"), "s")
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"a": 1}])}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match="no split 'test'"):
        read_source(HFDatasetSource(path=tmp_path / "hf", split="test"), "s")


# ------------------------------------------------------------------------------------- request log


def make_log(url: str) -> None:
    import sqlalchemy as sa

    requests, feedback = requests_table, feedback_table
    engine = sa.create_engine(url)
    create_log_tables(engine)
    chat = json.dumps([{"role": "user", "content": "How do I reset my password?"}])
    t = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    reqs = [
        # id, endpoint, served, prompt, response, status, shadow, tags, created
        ("r1", "chat.completions", "support", chat, "I don't know.", 200, None, {"slice": "auth"}, t),
        ("r2", "chat.completions", "support", chat, "Use the reset link.", 200, None, {"slice": "auth"}, t),
        ("r3", "completions", "support", "2+2=", "4", 200, None, {"slice": "math"}, t),
        ("r4", "chat.completions", "support", chat, "shadow answer", 200, "r2", {"slice": "auth"}, t),
        ("r5", "chat.completions", "other", chat, "x", 200, None, {"slice": "auth"}, t),
        ("r6", "chat.completions", "support", chat, "boom", 500, None, {"slice": "auth"}, t),
        (
            "r7",
            "chat.completions",
            "support",
            chat,
            "meh",
            200,
            None,
            {"slice": "auth"},
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
        ("r8", "chat.completions", "support", chat, "bad answer", 200, None, {"slice": "auth"}, t),
    ]
    fb = [
        ("r1", None, -1, "Click 'Forgot password' on the sign-in page."),  # corrected
        ("r2", 1.0, 1, None),  # accepted
        ("r3", 0.9, None, None),  # accepted by rating
        ("r4", None, 1, None),  # shadow: skipped
        ("r5", None, 1, None),  # other served_name
        ("r6", None, 1, None),  # failed request
        ("r7", None, None, "old correction"),  # outside the window
        ("r8", 0.2, -1, None),  # rejected, no correction
    ]
    with engine.begin() as conn:
        for rid, endpoint, served, prompt, resp, status, shadow, tags, created in reqs:
            conn.execute(
                requests.insert().values(
                    id=rid,
                    created_at=created,
                    endpoint=endpoint,
                    model_requested=served,
                    served_name=served,
                    prompt=prompt,
                    response=resp,
                    status_code=status,
                    stream=False,
                    shadow_of=shadow,
                    tags=tags,
                )
            )
        for rid, rating, thumbs, correction in fb:
            conn.execute(
                feedback.insert().values(
                    request_id=rid, created_at=t, rating=rating, thumbs=thumbs, correction=correction
                )
            )
    engine.dispose()


def test_request_log_reads_corrections_and_accepted_answers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    make_log(url)
    source = RequestLogSource(database_url=url, served_name="support", since=datetime(2026, 11, 1))
    raw = read_source(source, "feedback")
    by_id = {r["request_id"]: r for r in raw.rows}
    assert set(by_id) == {"r1", "r2", "r3"}
    assert by_id["r1"]["messages"][-1] == {
        "role": "assistant",
        "content": "Click 'Forgot password' on the sign-in page.",
    }
    assert by_id["r1"]["origin"] == "correction" and by_id["r2"]["origin"] == "accepted"
    assert by_id["r2"]["messages"][-1]["content"] == "Use the reset link."
    assert by_id["r3"] == {"request_id": "r3", "origin": "accepted", "prompt": "2+2=", "completion": "4"}


def test_request_log_filters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    make_log(url)
    only_corrections = read_source(
        RequestLogSource(database_url=url, include_accepted=False, since=datetime(2026, 11, 1)), "f"
    )
    assert {r["request_id"] for r in only_corrections.rows} == {"r1"}
    math = read_source(RequestLogSource(database_url=url, tags={"slice": "math"}), "f")
    assert [r["request_id"] for r in math.rows] == ["r3"]
    with pytest.raises(DataError, match="no corrected or accepted requests"):
        read_source(RequestLogSource(database_url=url, served_name="nobody"), "f")


def test_request_log_without_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(DataError, match="has no table"):
        peek_columns(RequestLogSource(database_url=url))
