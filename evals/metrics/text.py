"""Text-overlap metrics: exact match, contains-answer, ROUGE, BLEU, chrF (via shipped `evaluate` modules)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from evals.errors import MetricError
from evals.metrics.base import Metric, MetricInput, MetricScores, compute_module, register_metric


def _references(inputs: MetricInput, metric: str) -> list[list[str]]:
    refs: list[list[str]] = []
    for example in inputs.examples:
        if example.reference is None:
            raise MetricError(f"metric {metric!r} needs a reference, example {example.id!r} has none")
        aliases = example.fields.get("aliases")
        extra = [str(a) for a in aliases] if isinstance(aliases, list) else []
        refs.append([example.reference, *extra])
    return refs


def _single_reference(inputs: MetricInput, metric: str) -> list[list[str]]:
    return [[refs[0]] for refs in _references(inputs, metric)]


@register_metric("exact_match")
class ExactMatch(Metric):
    """1 when the answer equals the reference (or an alias in the `aliases` column) after normalisation."""

    module = "exact_match"
    allowed_args = frozenset({"ignore_case", "ignore_punctuation", "ignore_articles"})

    def _score(self, inputs: MetricInput) -> MetricScores:
        out = compute_module(
            self.module,
            predictions=list(inputs.predictions),
            references=_references(inputs, self.name),
            **self.args,
        )
        return MetricScores(out["scores"], np.array(out["stats"], dtype=float), float(out["exact_match"]))


@register_metric("contains_answer")
class ContainsAnswer(Metric):
    """1 when the reference (or an alias) appears in the answer as whole words."""

    module = "contains_answer"
    allowed_args = frozenset({"ignore_case"})

    def _score(self, inputs: MetricInput) -> MetricScores:
        out = compute_module(
            self.module,
            predictions=list(inputs.predictions),
            references=_references(inputs, self.name),
            **self.args,
        )
        return MetricScores(out["scores"], np.array(out["stats"], dtype=float), float(out["contains_answer"]))


class _Rouge(Metric):
    module = "rouge"
    rouge_type: ClassVar[str]
    allowed_args = frozenset({"use_stemmer"})

    def _score(self, inputs: MetricInput) -> MetricScores:
        out = compute_module(
            self.module,
            predictions=list(inputs.predictions),
            references=_references(inputs, self.name),
            rouge_types=[self.rouge_type],
            **self.args,
        )
        return MetricScores(
            out["scores"][self.rouge_type],
            np.array(out["stats"][self.rouge_type], dtype=float),
            float(out[self.rouge_type]),
        )


@register_metric("rouge1")
class Rouge1(_Rouge):
    """ROUGE-1 F-measure (unigram overlap), mean over examples."""

    rouge_type = "rouge1"


@register_metric("rouge2")
class Rouge2(_Rouge):
    """ROUGE-2 F-measure (bigram overlap), mean over examples."""

    rouge_type = "rouge2"


@register_metric("rougeL")
class RougeL(_Rouge):
    """ROUGE-L F-measure (longest common subsequence), mean over examples."""

    rouge_type = "rougeL"


class _SacreMetric(Metric):
    """Corpus-level sacrebleu metrics: per-example rows are segment statistics."""

    value_key: ClassVar[str]

    def _score(self, inputs: MetricInput) -> MetricScores:
        out = compute_module(
            self.module,
            predictions=list(inputs.predictions),
            references=_single_reference(inputs, self.name),
            **self.args,
        )
        return MetricScores(out["scores"], np.array(out["stats"], dtype=float), float(out[self.value_key]))

    @classmethod
    def _scorer(cls, width: int) -> Any:
        raise NotImplementedError

    @classmethod
    def statistic(cls, summed: np.ndarray) -> np.ndarray:
        summed = np.asarray(summed, dtype=float)
        rows = summed.reshape(-1, summed.shape[-1])
        scorer = cls._scorer(summed.shape[-1])
        values = np.array([_score_from_stats(scorer, row) for row in rows], dtype=float)
        return values.reshape(summed.shape[:-1])


def _score_from_stats(scorer: Any, row: np.ndarray) -> float:
    if not np.any(row):
        return float("nan")
    return float(scorer._compute_score_from_stats([int(round(x)) for x in row]).score)


@register_metric("bleu")
class Bleu(_SacreMetric):
    """Corpus BLEU (sacrebleu defaults: 13a, exp smoothing), 0-100."""

    module = "bleu"
    value_key = "bleu"
    allowed_args = frozenset({"lowercase", "tokenize"})

    @classmethod
    def _scorer(cls, width: int) -> Any:
        from sacrebleu.metrics import BLEU

        return BLEU(effective_order=False)


@register_metric("chrf")
class Chrf(_SacreMetric):
    """Corpus chrF (sacrebleu, beta 2), 0-100."""

    module = "chrf"
    value_key = "chrf"
    allowed_args = frozenset({"word_order"})

    @classmethod
    def _scorer(cls, width: int) -> Any:
        from sacrebleu.metrics import CHRF

        # Rows hold 3 numbers per n-gram order: 6 character orders plus `word_order` word orders.
        return CHRF(word_order=width // 3 - CHRF.CHAR_ORDER)
