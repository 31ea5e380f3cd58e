"""Small text measures of the scorers: word tokens, token F1, n-gram repetition.

Words are normalised as evals normalises answers (`evals.metrics.answers.normalise_answer`: lower case,
punctuation to spaces, collapsed whitespace), and "contains the answer" is evals' own test
(`evals.metrics.answers.contains_answer`), so monitoring and offline evals agree on a match; token F1 is
the SQuAD definition (bag-of-tokens overlap; English articles dropped).
"""

from __future__ import annotations

from collections import Counter

from evals.metrics.answers import normalise_answer

__all__ = ["repeated_ngram_fraction", "token_f1", "tokens"]

_ARTICLES = frozenset({"a", "an", "the"})


def tokens(text: str, *, drop_articles: bool = False) -> list[str]:
    """Normalised word tokens."""
    words = normalise_answer(text).split()
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


def repeated_ngram_fraction(words: list[str], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier n-gram (0 = none repeated; near 1 = a loop)."""
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)
