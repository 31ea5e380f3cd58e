"""Classification metrics: accuracy and macro-F1 over the suite's declared labels."""

from __future__ import annotations

import numpy as np

from evals.errors import MetricError
from evals.metrics.base import Metric, MetricInput, MetricScores, compute_module, register_metric


def _labels(inputs: MetricInput, metric: str) -> list[str]:
    if not inputs.labels:
        raise MetricError(f"metric {metric!r} needs the suite's `labels`")
    return list(inputs.labels)


def _references(inputs: MetricInput, metric: str) -> list[str]:
    refs = []
    for example in inputs.examples:
        if example.reference is None:
            raise MetricError(f"metric {metric!r}: example {example.id!r} has no reference label")
        refs.append(example.reference)
    return refs


@register_metric("accuracy")
class Accuracy(Metric):
    """Fraction of examples whose extracted label equals the reference label."""

    module = "classification"

    def _score(self, inputs: MetricInput) -> MetricScores:
        out = compute_module(
            self.module,
            predictions=list(inputs.predictions),
            references=_references(inputs, self.name),
            labels=_labels(inputs, self.name),
        )
        return MetricScores(
            out["scores"], np.array(out["accuracy_stats"], dtype=float), float(out["accuracy"])
        )


@register_metric("f1")
class MacroF1(Metric):
    """Macro-averaged F1 over the labels present (as reference or prediction) in the scored examples."""

    module = "classification"

    def _score(self, inputs: MetricInput) -> MetricScores:
        out = compute_module(
            self.module,
            predictions=list(inputs.predictions),
            references=_references(inputs, self.name),
            labels=_labels(inputs, self.name),
        )
        return MetricScores(out["scores"], np.array(out["f1_stats"], dtype=float), float(out["f1"]))

    @classmethod
    def statistic(cls, summed: np.ndarray) -> np.ndarray:
        summed = np.asarray(summed, dtype=float)
        n = summed.shape[-1] // 3
        tp, fp, fn = summed[..., :n], summed[..., n : 2 * n], summed[..., 2 * n :]
        denom = 2 * tp + fp + fn
        present = denom > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
            counts = present.sum(axis=-1)
            out: np.ndarray = np.where(counts > 0, f1.sum(axis=-1) / np.where(counts > 0, counts, 1), np.nan)
        return out
