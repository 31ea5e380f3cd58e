"""`evaluate` module: does the prediction contain a reference answer (whole words, normalised)?

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
"""

import string

import datasets
import evaluate

_DESCRIPTION = (
    "1.0 when any reference appears in the prediction as whole words after normalisation, else 0.0."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of lists of acceptable answers (any may match).
    ignore_case: default True.
Returns:
    contains_answer: mean; scores: per example; stats: [[score, 1], ...].
Examples:
    >>> m.compute(predictions=["It is Paris, of course"], references=[["paris"]])["contains_answer"]
    1.0
"""

_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise(text, ignore_case=True):
    if ignore_case:
        text = text.lower()
    return " ".join(text.translate(_PUNCT).split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ContainsAnswer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, ignore_case=True):
        scores = []
        for prediction, refs in zip(predictions, references, strict=True):
            haystack = f" {normalise(prediction, ignore_case)} "
            found = any(
                normalise(ref, ignore_case) and f" {normalise(ref, ignore_case)} " in haystack for ref in refs
            )
            scores.append(1.0 if found else 0.0)
        return {
            "contains_answer": sum(scores) / len(scores) if scores else float("nan"),
            "scores": scores,
            "stats": [[s, 1.0] for s in scores],
        }
