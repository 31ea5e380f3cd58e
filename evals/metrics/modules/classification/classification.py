"""`evaluate` module: accuracy and macro-F1 for single-label classification, with per-example statistics.

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
Per-example statistics: accuracy `[correct, 1]`; F1 `[tp_1..tp_C, fp_1..fp_C, fn_1..fn_C]` over the declared
labels, so the macro-F1 of any subset (slice, bootstrap resample) is computed from summed rows exactly.
Macro-F1 averages over labels that occur in the subset (as reference or prediction); a prediction that is
not a declared label counts as a miss for the true label only.
"""

import datasets
import evaluate

_DESCRIPTION = "Accuracy and macro-F1 over declared labels (predictions already mapped to labels)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted labels (strings).
    references: list of true labels (strings).
    labels: the declared labels (required).
Returns:
    accuracy, f1 (macro), scores (1.0/0.0 per example), accuracy_stats, f1_stats.
Examples:
    >>> m.compute(predictions=["a", "b"], references=["a", "a"], labels=["a", "b"])["accuracy"]
    0.5
"""


def macro_f1(summed, n_labels):
    tp = summed[:n_labels]
    fp = summed[n_labels : 2 * n_labels]
    fn = summed[2 * n_labels :]
    f1s = [2 * t / (2 * t + p + n) for t, p, n in zip(tp, fp, fn, strict=True) if t + p + n > 0]
    return sum(f1s) / len(f1s) if f1s else float("nan")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
        if not labels:
            raise ValueError("classification metrics need the declared `labels`")
        labels = list(labels)
        index = {label: i for i, label in enumerate(labels)}
        n = len(labels)
        scores, f1_stats = [], []
        for prediction, reference in zip(predictions, references, strict=True):
            if reference not in index:
                raise ValueError(f"reference label {reference!r} is not one of the declared labels {labels}")
            row = [0.0] * (3 * n)
            if prediction == reference:
                row[index[reference]] = 1.0
            else:
                row[2 * n + index[reference]] = 1.0
                if prediction in index:
                    row[n + index[prediction]] = 1.0
            f1_stats.append(row)
            scores.append(1.0 if prediction == reference else 0.0)
        summed = [sum(col) for col in zip(*f1_stats, strict=True)] if f1_stats else [0.0] * (3 * n)
        return {
            "accuracy": sum(scores) / len(scores) if scores else float("nan"),
            "f1": macro_f1(summed, n),
            "scores": scores,
            "accuracy_stats": [[s, 1.0] for s in scores],
            "f1_stats": f1_stats,
        }
