"""`evaluate` module: ROUGE F-measures per example (rouge-score), averaged over examples.

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
Unlike the hub's `rouge`, it always returns per-example scores so comparisons can be paired.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-N / ROUGE-L F-measure per example (best over references), mean over examples."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of lists of reference strings.
    rouge_types: e.g. ["rouge1", "rouge2", "rougeL", "rougeLsum"].
    use_stemmer: Porter stemming (default True).
Returns:
    <type>: mean F-measure per rouge type; scores: {type: per-example list}; stats: {type: [[f, 1], ...]}.
Examples:
    >>> m.compute(predictions=["the cat sat"], references=[["the cat sat"]], rouge_types=["rouge1"])["rouge1"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, rouge_types=("rouge1", "rouge2", "rougeL"), use_stemmer=True):
        rouge_types = list(rouge_types)
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
        per_type = {t: [] for t in rouge_types}
        for prediction, refs in zip(predictions, references, strict=True):
            scored = [scorer.score(ref, prediction) for ref in refs] or [None]
            for t in rouge_types:
                per_type[t].append(max(s[t].fmeasure for s in scored) if scored[0] is not None else 0.0)
        out = {t: (sum(v) / len(v) if v else float("nan")) for t, v in per_type.items()}
        out["scores"] = per_type
        out["stats"] = {t: [[f, 1.0] for f in v] for t, v in per_type.items()}
        return out
