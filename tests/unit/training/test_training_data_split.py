"""Deterministic splits: a row never changes split when the data grows; fractions are respected; mixture
weights repeat rows deterministically."""

from __future__ import annotations

import hashlib
from collections import Counter

from training.data.split import assign_split, repeat_count


def h(i: int) -> str:
    return hashlib.sha256(f"row {i}".encode()).hexdigest()


def test_rows_keep_their_split_when_data_grows() -> None:
    small = {h(i): assign_split(h(i), 0.1, 0.1) for i in range(200)}
    grown = {h(i): assign_split(h(i), 0.1, 0.1) for i in range(2000)}
    assert all(grown[k] == v for k, v in small.items())


def test_fractions_are_roughly_respected() -> None:
    counts = Counter(assign_split(h(i), 0.1, 0.2) for i in range(5000))
    assert 0.08 < counts["validation"] / 5000 < 0.12
    assert 0.18 < counts["test"] / 5000 < 0.22


def test_salt_reshuffles() -> None:
    plain = [assign_split(h(i), 0.2, 0.2) for i in range(300)]
    salted = [assign_split(h(i), 0.2, 0.2, salt="v2") for i in range(300)]
    assert plain != salted


def test_repeat_count() -> None:
    assert all(repeat_count(h(i), 1.0) == 1 for i in range(50))
    assert all(repeat_count(h(i), 2.0) == 2 for i in range(50))
    halves = [repeat_count(h(i), 0.5) for i in range(2000)]
    assert set(halves) == {0, 1} and 0.45 < sum(halves) / 2000 < 0.55
    assert [repeat_count(h(i), 1.5) for i in range(20)] == [repeat_count(h(i), 1.5) for i in range(20)]
