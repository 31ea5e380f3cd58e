"""`evaluate` module: corpus chrF (sacrebleu) with per-example sufficient statistics and sentence chrF.

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
"""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = "Corpus chrF (character n-gram F-score, beta=2; word_order=2 gives chrF++) on a 0-100 scale."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of lists of references (every example the same number of references).
    word_order: 0 for chrF, 2 for chrF++ (default 0).
Returns:
    chrf: corpus chrF; scores: sentence chrF per example; stats: segment statistics per example.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Popovic, 2015. chrF: character n-gram F-score for automatic MT evaluation.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, word_order=0):
        n_refs = {len(refs) for refs in references}
        if len(n_refs) != 1:
            raise ValueError("every example needs the same number of references for chrF")
        transposed = [list(r) for r in zip(*references, strict=True)]
        chrf = CHRF(word_order=word_order)
        corpus = chrf.corpus_score(list(predictions), transposed)
        stats = chrf._extract_corpus_statistics(list(predictions), transposed)
        scores = [
            CHRF(word_order=word_order).sentence_score(p, list(refs)).score
            for p, refs in zip(predictions, references, strict=True)
        ]
        return {"chrf": corpus.score, "scores": scores, "stats": [[float(x) for x in row] for row in stats]}
