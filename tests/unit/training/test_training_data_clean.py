"""Cleaning rules, each on its own and together on the shipped fixture: broken encodings, empty targets,
exact / normalised / near duplicates (first kept), PII scrubbed with counts."""

from __future__ import annotations

import json
from pathlib import Path

from training.config import CleanConfig
from training.data.clean import CleanReport, NearDuplicateIndex, broken_encoding, clean_examples
from training.data.example import Example


def completion(prompt: str, answer: str) -> Example:
    return Example(kind="completion", source="s", prompt=prompt, completion=answer)


def run(examples: list[Example], **cfg: object) -> tuple[list[Example], CleanReport]:
    report = CleanReport()
    return clean_examples(examples, CleanConfig(**cfg), report), report


def test_broken_encoding_detection() -> None:
    assert broken_encoding("fine text, café, 東京") is None
    assert "U+FFFD" in (broken_encoding("bad \ufffd") or "")
    assert "mojibake" in (broken_encoding("cafÃ© au lait") or "")
    assert "mojibake" in (broken_encoding("it‚Äôs â€œquotedâ€") or "") or broken_encoding("â€œquotedâ€")
    assert "control" in (broken_encoding("bell\x07") or "")
    assert broken_encoding("tabs\tand\nnewlines") is None


def test_each_rule_counts_its_drops() -> None:
    rows = [
        completion("q1", "The answer."),
        completion("q1", "The answer."),  # exact duplicate
        completion("Q1", "the   ANSWER"),  # duplicate after normalisation
        completion("q2", "mojibake cafÃ©"),
        completion("q3", "  "),
        completion("q4", "Another, different answer about invoices."),
    ]
    kept, report = run(rows)
    assert [e.prompt for e in kept] == ["q1", "q4"]
    assert report.dropped == {"duplicate": 2, "broken_encoding": 1, "empty": 1}


def test_rules_can_be_switched_off() -> None:
    rows = [completion("q", "same"), completion("q", "same"), completion("x", "cafÃ©")]
    kept, report = run(rows, dedupe=False, drop_broken_encoding=False)
    assert len(kept) == 3 and not report.dropped


def test_near_duplicates_keep_the_first() -> None:
    base = "the starter plan includes five seats ten gigabytes of storage nightly backups and email support"
    rows = [
        completion("a", base),
        completion("b", base + " members"),
        completion("c", "something else entirely here"),
    ]
    kept, report = run(rows, near_duplicate_threshold=0.8)
    assert [e.prompt for e in kept] == ["a", "c"]
    assert report.dropped["near_duplicate"] == 1


def test_near_duplicate_index_threshold() -> None:
    index = NearDuplicateIndex(threshold=0.9)
    words = " ".join(f"w{i}" for i in range(40))
    assert index.add(words) is False
    assert index.add(words + " extra") is True  # 38/39 shingles shared
    assert index.add(" ".join(f"v{i}" for i in range(40))) is False


def test_pii_is_scrubbed_not_dropped() -> None:
    kept, report = run([completion("who?", "Mail jane@example.com or call +44 20 7946 0958")])
    assert kept[0].completion == "Mail [EMAIL] or call [PHONE]"
    assert report.pii == {"email": 1, "phone": 1}
    assert not report.dropped


def test_shipped_fixture(fixtures_dir: Path) -> None:
    rows = [
        json.loads(line)
        for line in (fixtures_dir / "clean_rules.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    kept, report = run([completion(r["prompt"], r["completion"]) for r in rows])
    assert report.dropped == {"duplicate": 2, "broken_encoding": 2, "empty": 1, "near_duplicate": 1}
    assert report.pii == {"email": 1, "phone": 1}
    assert len(kept) == len(rows) - 6
