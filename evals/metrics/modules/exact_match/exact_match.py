"""`evaluate` module: exact match after light normalisation (case, punctuation, articles, whitespace).

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
Returns the mean, per-example scores, and per-example sufficient statistics `[score, 1]`.
"""

import re
import string

import datasets
import evaluate

_DESCRIPTION = "Exact match of prediction and any reference after normalisation (1.0 or 0.0 per example)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of lists of acceptable answers.
    ignore_case, ignore_punctuation, ignore_articles: normalisation switches (default True).
Returns:
    exact_match: mean over examples; scores: per example; stats: [[score, 1], ...].
Examples:
    >>> m = evaluate.load("evals/metrics/modules/exact_match")
    >>> m.compute(predictions=["The Paris."], references=[["paris"]])["exact_match"]
    1.0
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise(text, ignore_case=True, ignore_punctuation=True, ignore_articles=True):
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCT)
    if ignore_articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
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

    def _compute(
        self, predictions, references, ignore_case=True, ignore_punctuation=True, ignore_articles=True
    ):
        opts = dict(
            ignore_case=ignore_case, ignore_punctuation=ignore_punctuation, ignore_articles=ignore_articles
        )
        scores = []
        for prediction, refs in zip(predictions, references, strict=True):
            pred = normalise(prediction, **opts)
            scores.append(1.0 if any(pred == normalise(ref, **opts) for ref in refs) else 0.0)
        return {
            "exact_match": sum(scores) / len(scores) if scores else float("nan"),
            "scores": scores,
            "stats": [[s, 1.0] for s in scores],
        }
