"""`evaluate` module: does the prediction contain a reference answer (whole words, normalised)?

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`. The test
itself is `evals.metrics.answers.contains_answer` (monitoring's reference scorer uses the same one).
"""

import datasets
import evaluate

from evals.metrics.answers import contains_answer

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
        scores = [
            contains_answer(prediction, refs, ignore_case)
            for prediction, refs in zip(predictions, references, strict=True)
        ]
        return {
            "contains_answer": sum(scores) / len(scores) if scores else float("nan"),
            "scores": scores,
            "stats": [[s, 1.0] for s in scores],
        }
