"""Small text measures shared by the scorers: normalisation, token F1, contains-answer, n-gram repetition.

Normalisation follows the evals `contains_answer` module (lower case, punctuation to spaces, collapsed
whitespace) so monitoring and offline evals agree on what "contains the answer" means; token F1 is the
SQuAD definition (bag-of-tokens overlap; English articles dropped).
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable

__all__ = ["contains_answer", "normalise", "repeated_ngram_fraction", "token_f1", "tokens"]

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_ARTICLES = frozenset({"a", "an", "the"})


def normalise(text: str) -> str:
    """Lower case, punctuation replaced by spaces, whitespace collapsed."""
    return " ".join(text.lower().translate(_PUNCT).split())


def tokens(text: str, *, drop_articles: bool = False) -> list[str]:
    """Normalised word tokens."""
    words = normalise(text).split()
    return [w for w in words if w not in _ARTICLES] if drop_articles else words


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between a prediction and one reference (1.0 when both are empty)."""
    pred = tokens(prediction, drop_articles=True)
    ref = tokens(reference, drop_articles=True)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred)
    recall = overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, references: Iterable[str]) -> float:
    """1.0 when any non-empty reference appears in the prediction as whole words (normalised)."""
    haystack = f" {normalise(prediction)} "
    for reference in references:
        needle = normalise(reference)
        if needle and f" {needle} " in haystack:
            return 1.0
    return 0.0


def repeated_ngram_fraction(words: list[str], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier n-gram (0 = none repeated; near 1 = a loop)."""
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)
