"""Data preparation end to end with the base model's tokenizer (no weights): assistant-only labels, text
chunking, length limits, mixture weights, zero-rows errors, the data card and a stable dataset hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.data.encode import encode_example
from training.data.example import Example, RowRejected
from training.data.pipeline import prepare_data
from training.errors import DataError

IGNORE = -100


def test_assistant_only_labels_cover_every_assistant_turn(tokenizer: Any) -> None:
    ex = Example(
        kind="chat",
        source="s",
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye"},
        ),
    )
    (enc,) = encode_example(ex, tokenizer, 256)
    trained = tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE])
    assert "Hello there<|im_end|>" in trained and "Goodbye<|im_end|>" in trained
    assert (
        "Hi" not in trained
        and "Bye" not in trained
        and "Be brief" not in trained
        and "assistant" not in trained
    )
    assert len(enc.input_ids) == len(enc.labels)


def test_completion_and_text_labels(tokenizer: Any) -> None:
    (comp,) = encode_example(
        Example(kind="completion", source="s", prompt="Capital of France:", completion=" Paris"),
        tokenizer,
        64,
    )
    assert (
        tokenizer.decode([t for t, lab in zip(comp.input_ids, comp.labels, strict=True) if lab != IGNORE])
        == " Paris" + tokenizer.eos_token
    )
    long_text = " ".join(f"word{i}" for i in range(200))
    chunks = encode_example(Example(kind="text", source="s", text=long_text), tokenizer, 64)
    assert len(chunks) > 3 and all(len(c.input_ids) <= 64 for c in chunks)
    assert all(c.labels == c.input_ids for c in chunks)
    assert chunks[-1].input_ids[-1] == tokenizer.eos_token_id


def test_too_long_rows_are_dropped_or_truncated(tokenizer: Any) -> None:
    ex = Example(kind="completion", source="s", prompt="q", completion=" answer" * 100)
    with pytest.raises(RowRejected) as info:
        encode_example(ex, tokenizer, 32)
    assert info.value.reason == "too_long"
    (cut,) = encode_example(ex, tokenizer, 32, overlong="truncate")
    assert len(cut.input_ids) == 32 and cut.trainable_tokens > 0


def test_prepare_support_fixture(make_config: Any, tokenizer: Any) -> None:
    prepared = prepare_data(make_config(), tokenizer)
    card = prepared.card
    assert card is not None
    assert sum(card.splits.values()) + sum(card.dropped.values()) == 48
    assert len(prepared.train) == card.splits["train"] > 30
    assert set(prepared.train.column_names) == {"input_ids", "labels", "source"}
    assert card.token_lengths["train"]["max"] <= 256
    assert card.trainable_tokens["train"] > 0
    assert card.sources[0].rows_read == 48
    assert "dataset hash" in card.to_markdown()
    again = prepare_data(make_config(), tokenizer)
    assert again.dataset_hash == prepared.dataset_hash  # deterministic


def test_dataset_hash_and_splits_are_stable_when_rows_are_added(
    make_config: Any, tokenizer: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    lines = (fixtures_dir / "support_tiny.jsonl").read_text(encoding="utf-8").splitlines()
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text("\n".join(lines[:30]) + "\n", encoding="utf-8")
    big.write_text("\n".join(lines) + "\n", encoding="utf-8")
    a = prepare_data(make_config([{"path": str(small)}]), tokenizer)
    b = prepare_data(make_config([{"path": str(big)}]), tokenizer)
    for split in ("train", "validation", "test"):
        assert {e.content_hash for e in a.examples[split]} <= {e.content_hash for e in b.examples[split]}
    assert a.dataset_hash != b.dataset_hash


def test_mixture_weights_apply_to_train_only(make_config: Any, tokenizer: Any, fixtures_dir: Path) -> None:
    path = str(fixtures_dir / "support_tiny.jsonl")
    one = prepare_data(make_config([{"path": path}]), tokenizer)
    two = prepare_data(make_config([{"path": path, "weight": 2.0}]), tokenizer)
    assert len(two.train) == 2 * len(one.train)
    assert two.card is not None and one.card is not None
    assert two.card.splits == one.card.splits and two.card.train_rows_after_weighting == 2 * len(one.train)


def test_zero_rows_after_cleaning(make_config: Any, tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": "q", "completion": c}) + "\n" for c in ["  ", "cafÃ©", "\ufffd"]),
        encoding="utf-8",
    )
    with pytest.raises(DataError) as info:
        prepare_data(make_config([{"path": str(path)}]), tokenizer)
    assert "no training rows left after cleaning" in str(info.value)
    assert "broken_encoding: 2" in str(info.value) and "empty: 1" in str(info.value)


def test_wrong_columns_fail_before_formatting(make_config: Any, tokenizer: Any, fixtures_dir: Path) -> None:
    with pytest.raises(DataError, match="cannot pick a template"):
        prepare_data(make_config([{"path": str(fixtures_dir / "wrong_columns.jsonl")}]), tokenizer)
    fixed = make_config(
        [
            {
                "path": str(fixtures_dir / "wrong_columns.jsonl"),
                "template": "completion",
                "columns": {"prompt": "question", "completion": "answer"},
            }
        ],
        data={"split": {"validation": 0.0, "test": 0.0}},
    )
    prepared = prepare_data(fixed, tokenizer)
    assert len(prepared.train) == 3


def test_pii_counts_reach_the_card(make_config: Any, tokenizer: Any, fixtures_dir: Path) -> None:
    prepared = prepare_data(
        make_config(
            [{"path": str(fixtures_dir / "clean_rules.jsonl")}],
            data={"split": {"validation": 0.0, "test": 0.0}},
        ),
        tokenizer,
    )
    assert prepared.card is not None
    assert prepared.card.pii_replaced == {"email": 1, "phone": 1}
    assert prepared.card.dropped == {"duplicate": 2, "broken_encoding": 2, "empty": 1, "near_duplicate": 1}
