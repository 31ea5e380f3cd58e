"""Shipped datasets are deterministic and match their generators; the support-desk split is clean."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from evals.datasets import build
from evals.datasets.support_desk import FACTS, INTENTS, chat_records, generate_tickets


def test_shipped_data_files_match_the_generators() -> None:
    for name in build.DATASETS:
        shipped = (build.DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8")
        assert shipped == build.render(name), f"{name}.jsonl is stale: run python -m evals.datasets.build"


def test_build_writes_every_dataset(tmp_path: Path) -> None:
    written = build.build(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.jsonl" for n in build.DATASETS)
    assert not list(tmp_path.glob("*.tmp"))


def test_support_tickets_are_deterministic_and_seed_dependent() -> None:
    assert generate_tickets(seed=0) == generate_tickets(seed=0)
    assert generate_tickets(seed=0) != generate_tickets(seed=1)


def test_support_test_questions_are_worded_differently_from_train() -> None:
    tickets = generate_tickets()
    ids = [t.id for t in tickets]
    assert len(ids) == len(set(ids))
    assert {t.intent for t in tickets} == set(INTENTS)
    for fact_index in range(len(FACTS)):
        mine = [t for t in tickets if t.id.split("-")[1] == f"{fact_index:02d}"]
        train_wordings = {t.id.split("-")[2] for t in mine if t.split == "train"}
        test_wordings = {t.id.split("-")[2] for t in mine if t.split == "test"}
        assert train_wordings and test_wordings and not train_wordings & test_wordings
    counts = Counter((t.intent, t.split) for t in tickets)
    assert all(counts[(intent, "test")] == 16 for intent in INTENTS)


def test_key_fact_is_in_the_reference_answer() -> None:
    for ticket in generate_tickets():
        assert ticket.key_fact.lower() in ticket.answer.lower()


def test_chat_records_for_training() -> None:
    records = chat_records(generate_tickets(intents=["refunds"])[:2])
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["intent"] == "refunds"
