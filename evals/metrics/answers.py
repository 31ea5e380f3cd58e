"""What "the answer contains the reference" means, written once: answer normalisation and the
contains-answer test.

Used by the shipped `contains_answer` evaluate module (offline evals) and by monitoring's reference scorer
(live traffic), so both agree on a match. Plain Python: no `evaluate`, no numpy.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

__all__ = ["contains_answer", "normalise_answer"]

_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise_answer(text: str, ignore_case: bool = True) -> str:
    """Lower case (unless `ignore_case=False`), punctuation replaced by spaces, whitespace collapsed."""
    if ignore_case:
        text = text.lower()
    return " ".join(text.translate(_PUNCT).split())


def contains_answer(prediction: str, references: Iterable[str], ignore_case: bool = True) -> float:
    """1.0 when any non-empty reference appears in the prediction as whole words (both normalised)."""
    haystack = f" {normalise_answer(prediction, ignore_case)} "
    for reference in references:
        needle = normalise_answer(reference, ignore_case)
        if needle and f" {needle} " in haystack:
            return 1.0
    return 0.0
