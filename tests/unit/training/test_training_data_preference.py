"""Preference records: the pairing rules from feedback (corrections, thumbs, ratings, same-prompt pairs),
KTO records, the request-log reader in preference / kto mode, and the preference / kto templates and their
trip through the pipeline (PII scrubbing, dedupe and conflicts, split by prompt, data card, TRL rows)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.log_schema import create_log_tables, feedback_table, requests_table
from training.config import RequestLogSource
from training.data.example import Example
from training.data.preference import FeedbackAnswer, kto_rows, preference_rows, verdict
from training.data.sources import peek_columns, read_source
from training.errors import DataError

CHAT = [{"role": "user", "content": "How do I reset my password?"}]


def answer(rid: str, response: str, *, prompt: Any = None, correction: str | None = None, v: Any = None):  # type: ignore[no-untyped-def]
    return FeedbackAnswer(rid, CHAT if prompt is None else prompt, response, correction, v)


# ------------------------------------------------------------------------------------------ pairing rules


def test_verdict_from_thumbs_and_ratings() -> None:
    kw = {"min_rating": 0.8, "max_rejected_rating": 0.3}
    assert verdict(1, None, **kw) == "good" and verdict(-1, 0.9, **kw) == "bad"  # thumbs win
    assert verdict(None, 0.9, **kw) == "good" and verdict(None, 0.2, **kw) == "bad"
    assert verdict(None, 0.5, **kw) is None and verdict(0, None, **kw) is None


def test_correction_is_chosen_and_the_served_answer_rejected() -> None:
    rows, counts = preference_rows(
        [answer("r1", "I don't know.", correction="Click 'Forgot password'.", v="bad")]
    )
    assert rows == [
        {
            "request_id": "r1",
            "prompt": CHAT,
            "rejected": "I don't know.",
            "origin": "correction",
            "chosen": "Click 'Forgot password'.",
        }
    ]
    assert counts == {"pairs_correction": 1}


def test_thumbs_down_without_correction_is_kto_undesirable_only() -> None:
    answers = [answer("r8", "bad answer", v="bad")]
    rows, counts = preference_rows(answers)
    assert rows == [] and counts == {"unpaired_rejected": 1}
    kto, kto_counts = kto_rows(answers)
    assert kto == [
        {"request_id": "r8", "origin": "rejected", "prompt": CHAT, "completion": "bad answer", "label": False}
    ]
    assert kto_counts == {"undesirable": 1}


def test_accepted_answer_is_chosen_for_a_rejection_of_the_same_prompt() -> None:
    other = [{"role": "user", "content": "Where is my invoice?"}]
    answers = [  # newest first
        answer("r3", "Use the reset link.", v="good"),
        answer("r2", "Try again later.", v="bad"),
        answer("r4", "Billing > Invoices.", prompt=other, v="good"),
        answer("r5", "No idea.", prompt=[{"role": "user", "content": "  Where is   my invoice? "}], v="bad"),
    ]
    rows, counts = preference_rows(answers)
    assert [(r["request_id"], r["chosen"], r["rejected"], r["origin"]) for r in rows] == [
        ("r2", "Use the reset link.", "Try again later.", "same_prompt"),
        ("r5", "Billing > Invoices.", "No idea.", "same_prompt"),  # whitespace does not make a new prompt
    ]
    assert rows[0]["chosen_request_id"] == "r3"
    assert counts == {"pairs_same_prompt": 2, "unpaired_accepted": 2}
    # without accepted answers, only corrections can be chosen
    assert preference_rows(answers, include_accepted=False)[0] == []


def test_a_correction_is_also_the_chosen_answer_for_other_rejections_of_its_prompt() -> None:
    rows, _ = preference_rows(
        [answer("r1", "Wrong.", correction="Right."), answer("r2", "Also wrong.", v="bad")]
    )
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("Right.", "Wrong."), ("Right.", "Also wrong.")]


def test_kto_records_per_feedback() -> None:
    answers = [
        answer("r1", "Wrong.", correction="Right."),
        answer("r2", "Fine answer.", v="good"),
        answer("r3", "Meh.", v=None),  # a middling rating: no signal
        answer("r4", "Same text", correction="Same  text"),  # a correction equal to the answer accepts it
    ]
    rows, counts = kto_rows(answers)
    assert [(r["request_id"], r["completion"], r["label"], r["origin"]) for r in rows] == [
        ("r1", "Right.", True, "correction"),
        ("r1", "Wrong.", False, "corrected_answer"),
        ("r2", "Fine answer.", True, "accepted"),
        ("r4", "Same text", True, "accepted"),
    ]
    assert counts == {"desirable": 3, "undesirable": 1}
    assert [r["request_id"] for r in kto_rows(answers, include_accepted=False)[0]] == ["r1", "r1"]


# --------------------------------------------------------------------------------- request log (sqlite)


def make_log(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    create_log_tables(engine)
    chat = json.dumps(CHAT)
    t = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    reqs = [  # id, prompt, response, status, shadow, minutes after t
        ("r1", chat, "I don't know.", 200, None, 0),
        ("r2", chat, "Use the reset link.", 200, None, 1),
        ("r3", chat, "shadow answer", 200, "r2", 2),
        ("r4", chat, "boom", 500, None, 3),
        ("r5", chat, "Wait a day.", 200, None, 4),
        ("r6", json.dumps([{"role": "user", "content": "Hi"}]), "Bye.", 200, None, 5),
    ]
    feedback = [  # request, rating, thumbs, correction, minutes after t
        ("r1", None, -1, None, 10),
        ("r1", None, None, "Click 'Forgot password' on the sign-in page.", 11),  # later: corrected
        ("r2", 0.2, None, None, 10),
        ("r2", None, 1, None, 12),  # the latest verdict wins: accepted
        ("r3", None, -1, None, 10),  # shadow: skipped
        ("r4", None, -1, None, 10),  # failed request: skipped
        ("r5", 0.1, None, None, 10),  # badly rated, no correction
        ("r6", None, -1, None, 10),  # thumbed down, nothing good for its prompt
    ]
    with engine.begin() as conn:
        for rid, prompt, resp, status, shadow, minutes in reqs:
            conn.execute(
                requests_table.insert().values(
                    id=rid,
                    created_at=t + timedelta(minutes=minutes),
                    endpoint="chat.completions",
                    model_requested="support",
                    served_name="support",
                    prompt=prompt,
                    response=resp,
                    status_code=status,
                    stream=False,
                    shadow_of=shadow,
                    tags={"slice": "auth"},
                )
            )
        for rid, rating, thumbs, correction, minutes in feedback:
            conn.execute(
                feedback_table.insert().values(
                    request_id=rid,
                    created_at=t + timedelta(minutes=minutes),
                    rating=rating,
                    thumbs=thumbs,
                    correction=correction,
                )
            )
    engine.dispose()


def test_request_log_preference_pairs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    make_log(url)
    source = RequestLogSource(database_url=url, records="preference")
    assert peek_columns(source) == ["prompt", "chosen", "rejected"]
    raw = read_source(source, "feedback")
    pairs = {r["request_id"]: (r["chosen"], r["rejected"], r["origin"]) for r in raw.rows}
    assert pairs == {
        "r1": ("Click 'Forgot password' on the sign-in page.", "I don't know.", "correction"),
        "r5": ("Use the reset link.", "Wait a day.", "same_prompt"),  # the newest good answer: r2 accepted
    }
    assert raw.rows[0]["prompt"] == CHAT
    assert raw.meta["records"] == "preference" and raw.meta["requests_with_feedback"] == 4
    assert raw.meta["unpaired_rejected"] == 1 and raw.meta["unpaired_accepted"] == 1  # r6, r2


def test_request_log_kto_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    make_log(url)
    source = RequestLogSource(database_url=url, records="kto")
    assert peek_columns(source) == ["prompt", "completion", "label"]
    raw = read_source(source, "feedback")
    got = sorted((r["request_id"], r["label"], r["origin"]) for r in raw.rows)
    assert got == [
        ("r1", False, "corrected_answer"),
        ("r1", True, "correction"),
        ("r2", True, "accepted"),
        ("r5", False, "rejected"),
        ("r6", False, "rejected"),
    ]
    assert raw.meta["desirable"] == 2 and raw.meta["undesirable"] == 3


def test_request_log_without_pairs_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    make_log(url)
    source = RequestLogSource(database_url=url, records="preference", since=datetime(2026, 11, 20, 12, 5))
    with pytest.raises(DataError, match="no preference records.*style kto trains on them"):
        read_source(source, "feedback")


# ---------------------------------------------------------------------------------- templates + pipeline


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pair(i: int, **extra: Any) -> dict[str, Any]:
    row = {
        "prompt": [{"role": "user", "content": f"Question number {i} about plan {i * 7}?"}],
        "chosen": f"The helpful answer {i}: open Settings > Plan {i}.",
        "rejected": f"Sorry, no idea about {i}.",
    }
    return row | extra


def test_preference_pipeline_cleans_scrubs_dedupes_and_splits_by_prompt(
    make_config: Any, tokenizer: Any, tmp_path: Path
) -> None:
    from training.data.pipeline import prepare_data

    rows = [pair(i) for i in range(40)]
    rows.append(pair(1))  # exact duplicate
    rows.append(
        pair(2, chosen=[{"role": "assistant", "content": "The helpful answer 2: open Settings > Plan 2."}])
    )
    rows.append(pair(3, chosen="x", rejected="  x "))  # same answers
    rows.append(pair(4, rejected=""))  # empty rejected answer
    rows.append(pair(50, chosen="Write to jane.doe@example.com or call +1 (555) 123-4567."))
    rows.append(pair(51, prompt=[{"role": "assistant", "content": "hi"}]))  # prompt must end with a user turn
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    config = make_config(
        sources=[{"path": str(path)}],
        style="dpo",
        data={"split": {"validation": 0.2, "test": 0.1}, "clean": {"near_duplicates": False}},
    )
    prepared = prepare_data(config, tokenizer)
    card = prepared.card
    assert card.dropped == {"duplicate": 2, "same_answers": 1, "empty": 1, "bad_prompt": 1}
    assert card.pii_replaced == {"email": 1, "phone": 1}
    assert card.sources[0].template == "preference"
    assert sum(card.splits.values()) == 41
    assert card.preference["style"] == "dpo"
    assert card.preference["train"]["pairs"] == card.splits["train"] == len(prepared.train)
    assert set(prepared.train.column_names) == {"prompt", "chosen", "rejected", "source"}
    first = prepared.train[0]
    assert first["prompt"][-1]["role"] == "user" and first["chosen"][0]["role"] == "assistant"
    scrubbed = [e for xs in prepared.examples.values() for e in xs if "[EMAIL]" in e.chosen]
    assert scrubbed and "[PHONE]" in scrubbed[0].chosen
    assert prepared.examples["test"][0].to_record()["kind"] == "preference"
    assert "Preference records (dpo)" in card.to_markdown()


def test_kto_unpairs_pairs_and_keeps_a_prompt_in_one_split(
    make_config: Any, tokenizer: Any, tmp_path: Path
) -> None:
    from training.data.pipeline import prepare_data

    path = write_jsonl(tmp_path / "pairs.jsonl", [pair(i) for i in range(30)])
    config = make_config(
        sources=[{"path": str(path)}], style="kto", data={"split": {"validation": 0.2, "test": 0.2}}
    )
    prepared = prepare_data(config, tokenizer)
    assert set(prepared.train.column_names) == {"prompt", "completion", "label", "source"}
    counts = prepared.card.preference
    for split in ("train", "validation", "test"):  # each pair became one desirable + one undesirable row
        assert counts[split]["desirable"] == counts[split]["undesirable"] == prepared.card.splits[split]
    labels = prepared.train["label"]
    assert labels != sorted(labels, reverse=True)  # rows are shuffled (KTOTrainer samples in order)
    # the split follows the prompt: both records of a prompt share it, whatever the answers
    a = Example(kind="kto", source="s", messages=tuple(CHAT), completion="good", label=True)
    b = Example(kind="kto", source="s", messages=tuple(CHAT), completion="bad", label=False)
    assert a.split_key == b.split_key and a.content_hash != b.content_hash


def test_kto_records_from_a_file_conflicts_and_labels(
    make_config: Any, tokenizer: Any, tmp_path: Path
) -> None:
    from training.data.pipeline import prepare_data

    rows = [
        {
            "prompt": f"Plain prompt {i}:",
            "completion": f" answer {i}",
            "label": ["true", "no", 1, False][i % 4],
        }
        for i in range(24)
    ]
    rows.append({"prompt": "Plain prompt 0:", "completion": " answer 0", "label": False})  # conflicts
    rows.append({"prompt": "Plain prompt 99:", "completion": " x", "label": "maybe"})
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    config = make_config(
        sources=[{"path": str(path)}], style="kto", data={"clean": {"near_duplicates": False}}
    )
    prepared = prepare_data(config, tokenizer)
    assert prepared.card.dropped == {"conflicting_label": 1, "bad_label": 1}
    assert prepared.card.sources[0].template == "kto"
    assert isinstance(prepared.train[0]["prompt"], str)  # plain prompts stay plain (TRL standard format)


def test_style_and_records_must_match(
    make_config: Any, tokenizer: Any, tmp_path: Path, fixtures_dir: Path
) -> None:
    from training.data.pipeline import prepare_data

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [pair(i) for i in range(5)])
    with pytest.raises(DataError, match="train them with style: dpo or kto"):
        prepare_data(make_config(sources=[{"path": str(pairs)}]), tokenizer)
    with pytest.raises(DataError, match="style 'dpo' trains on preference records"):
        prepare_data(make_config(style="dpo"), tokenizer)  # the support chat fixture
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [pair(i) for i in range(20)] + [pair(99, prompt="plain?")])
    with pytest.raises(DataError, match="mix chat prompts"):
        prepare_data(make_config(sources=[{"path": str(mixed)}], style="dpo"), tokenizer)
