"""Cleaning rules applied to formatted examples, each dropped row counted by reason.

Rules (in this order): broken encodings (U+FFFD, lone surrogates, control characters, typical UTF-8
mojibake such as 'Ã©'), empty targets, PII scrubbing (rows are kept, PII replaced), exact duplicates
(after case/whitespace normalisation) and near-duplicates (MinHash over word 3-grams, confirmed with the
exact Jaccard similarity). The first occurrence of a duplicate is kept, so results are deterministic.

Preference examples are cleaned the same way: every answer (chosen and rejected) must be non-empty, PII is
scrubbed in the prompt and every answer, dedupe compares prompt + answers. A kto record that repeats an
earlier one with the opposite label is dropped as `conflicting_label` (the first verdict is kept).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from training.config import CleanConfig
from training.data.example import Example
from training.data.pii import scrub

__all__ = ["CleanReport", "NearDuplicateIndex", "broken_encoding", "clean_examples", "normalize"]

_MOJIBAKE = re.compile(r"Ã[\u0080-\u00bf]|â€[\u0080-\u00bf\u2018-\u203a™œ]|Â[\u00a0-\u00bf]|ï»¿")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NON_WORD = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")
_MERSENNE = (1 << 61) - 1


def broken_encoding(text: str) -> str | None:
    """Why `text` looks badly encoded, or None."""
    if "\ufffd" in text:
        return "contains U+FFFD replacement characters"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        return "contains lone surrogates"
    if _CONTROL.search(text):
        return "contains control characters"
    if _MOJIBAKE.search(text):
        return "looks like mojibake (UTF-8 decoded as Latin-1)"
    return None


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


def _shingles(text: str, n: int = 3) -> set[str]:
    words = normalize(text).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


class NearDuplicateIndex:
    """MinHash + LSH bands over word 3-grams; `add(text)` returns True when `text` is a near-duplicate of an
    earlier one (exact Jaccard >= threshold), else indexes it."""

    def __init__(self, threshold: float, num_perm: int = 64, bands: int = 16, seed: int = 1) -> None:
        self.threshold = threshold
        self.bands = bands
        self.rows = num_perm // bands
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._buckets: dict[tuple[int, bytes], list[int]] = {}
        self._sets: list[set[str]] = []

    def _signature(self, shingles: set[str]) -> np.ndarray:
        hashes = np.array(
            [
                int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") >> 3
                for s in shingles
            ],
            dtype=np.uint64,
        )
        # (a * h + b) mod p computed in Python ints would be slow; uint64 wraps, which is fine for hashing.
        mixed = (np.outer(hashes, self._a) + self._b) % np.uint64(_MERSENNE)
        return mixed.min(axis=0)

    def add(self, text: str) -> bool:
        shingles = _shingles(text)
        if not shingles:
            return False
        signature = self._signature(shingles)
        keys = [
            (band, signature[band * self.rows : (band + 1) * self.rows].tobytes())
            for band in range(self.bands)
        ]
        candidates = {idx for key in keys for idx in self._buckets.get(key, ())}
        for idx in sorted(candidates):
            other = self._sets[idx]
            if len(shingles & other) / len(shingles | other) >= self.threshold:
                return True
        index = len(self._sets)
        self._sets.append(shingles)
        for key in keys:
            self._buckets.setdefault(key, []).append(index)
        return False


@dataclass
class CleanReport:
    """What cleaning did: rows dropped per reason and PII replaced per kind."""

    dropped: Counter[str] = field(default_factory=Counter)
    pii: Counter[str] = field(default_factory=Counter)


def clean_examples(examples: Iterable[Example], config: CleanConfig, report: CleanReport) -> list[Example]:
    """Apply the cleaning rules; dropped rows are counted in `report.dropped`, PII in `report.pii`."""
    kept: list[Example] = []
    seen: dict[str, bool | None] = {}  # dedupe key -> the kept example's kto label
    near = NearDuplicateIndex(config.near_duplicate_threshold) if config.near_duplicates else None
    for example in examples:
        if config.drop_broken_encoding and broken_encoding(example.all_text()):
            report.dropped["broken_encoding"] += 1
            continue
        if min(len(t.strip()) for t in example.targets()) < config.min_chars:
            report.dropped["empty"] += 1
            continue
        if config.scrub_pii:
            found: Counter[str] = Counter()

            def _scrub(text: str, found: Counter[str] = found) -> str:
                clean, counts = scrub(text)
                found.update(counts)
                return clean

            example = example.map_text(_scrub)
            report.pii.update(found)
        if config.dedupe:
            key = hashlib.sha256(normalize(example.all_text()).encode()).hexdigest()
            if key in seen:
                report.dropped["conflicting_label" if seen[key] != example.label else "duplicate"] += 1
                continue
            seen[key] = example.label
            if near is not None and near.add(example.all_text()):
                report.dropped["near_duplicate"] += 1
                continue
        kept.append(example)
    return kept
