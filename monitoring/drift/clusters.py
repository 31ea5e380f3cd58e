"""Which topics moved: k-means on the pooled prompt embeddings, per-cluster share reference vs live.

Each cluster gets its share in both windows, a two-proportion z-test p-value, its most typical words and
the prompts closest to its centre (live ones first), so a drift report can say "refund questions about the
new X200 product went from 0% to 24% of traffic" instead of only "the distribution changed".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

from monitoring.drift.base import ClusterShift

__all__ = ["cluster_shift"]


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORD = re.compile(r"[a-z][a-z0-9'-]{2,}")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "was",
        "were",
        "you",
        "your",
        "with",
        "this",
        "that",
        "have",
        "has",
        "had",
        "not",
        "but",
        "can",
        "will",
        "what",
        "how",
        "why",
        "when",
        "where",
        "which",
        "who",
        "from",
        "into",
        "about",
        "there",
        "their",
        "they",
        "them",
        "our",
        "out",
        "get",
        "got",
        "does",
        "did",
        "just",
        "please",
        "would",
        "could",
        "should",
        "been",
        "being",
        "its",
        "it's",
        "i'm",
        "i've",
        "my",
        "me",
        "we",
        "us",
        "any",
        "some",
        "all",
        "more",
        "most",
        "very",
        "also",
        "than",
        "then",
        "too",
        "one",
        "two",
        "her",
        "his",
        "she",
        "him",
        "yes",
        "no",
        "do",
    ]
)


def _terms(texts: Sequence[str], background: Counter[str], n_background: int, top: int) -> list[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update({w for w in _WORD.findall(text.lower()) if w not in _STOP})
    n = max(1, len(texts))
    scored = []
    for word, count in counts.items():
        if count < 2 and len(texts) > 3:
            continue
        share_in = count / n
        share_all = background[word] / max(1, n_background)
        scored.append((share_in * math.log((share_in + 1e-3) / (share_all + 1e-3)), word))
    return [w for _, w in sorted(scored, reverse=True)[:top]]


def cluster_shift(
    ref: np.ndarray,
    live: np.ndarray,
    ref_texts: Sequence[str] | None = None,
    live_texts: Sequence[str] | None = None,
    *,
    k: int = 8,
    seed: int = 0,
    examples: int = 3,
    terms: int = 5,
) -> tuple[list[ClusterShift], dict[str, float]]:
    """Cluster shifts sorted by growth (largest first), and an overall chi-square test of the shares.

    `k` is reduced when the windows are small (at least ~5 prompts per cluster on average).
    """
    from sklearn.cluster import KMeans

    ref = np.asarray(ref, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    n_ref, n_live = len(ref), len(live)
    pooled = np.vstack([ref, live])
    k = max(2, min(k, len(pooled) // 5))
    model = KMeans(n_clusters=k, n_init=3, random_state=seed)
    labels = model.fit_predict(pooled)
    ref_labels, live_labels = labels[:n_ref], labels[n_ref:]
    texts: list[str] = list(ref_texts or []) + list(live_texts or [])
    has_texts = len(texts) == len(pooled)
    background: Counter[str] = Counter()
    if has_texts:
        for text in texts:
            background.update({w for w in _WORD.findall(text.lower()) if w not in _STOP})
    table = np.zeros((k, 2))
    shifts: list[ClusterShift] = []
    for c in range(k):
        a, b = int(np.sum(ref_labels == c)), int(np.sum(live_labels == c))
        table[c] = (a, b)
        p1, p2 = a / n_ref, b / n_live
        pooled_p = (a + b) / (n_ref + n_live)
        se = math.sqrt(max(pooled_p * (1 - pooled_p) * (1 / n_ref + 1 / n_live), 1e-18))
        p_value = float(2 * stats.norm.sf(abs(p2 - p1) / se)) if se > 1e-9 else 1.0
        shift = ClusterShift(
            cluster=c,
            ref_share=p1,
            live_share=p2,
            delta=p2 - p1,
            n_ref=a,
            n_live=b,
            p_value=min(1.0, p_value),
        )
        if has_texts:
            members = np.flatnonzero(labels == c)
            distances = np.linalg.norm(pooled[members] - model.cluster_centers_[c], axis=1)
            ordered = members[np.argsort(distances)]
            live_first = [i for i in ordered if i >= n_ref] + [i for i in ordered if i < n_ref]
            shift.examples = [texts[i] for i in live_first[:examples]]
            shift.terms = _terms([texts[i] for i in members], background, len(texts), terms)
        shifts.append(shift)
    nonempty = table[table.sum(axis=1) > 0]
    chi2, p_overall = (0.0, 1.0)
    if len(nonempty) > 1:
        result = stats.chi2_contingency(nonempty)
        chi2, p_overall = float(result.statistic), float(result.pvalue)
    shifts.sort(key=lambda s: s.delta, reverse=True)
    return shifts, {"k": float(k), "chi2": chi2, "chi2_p_value": p_overall}
