"""`evaluate` module: corpus BLEU (sacrebleu) with per-example sufficient statistics and sentence BLEU.

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
Per-example statistics are sacrebleu's segment statistics [hyp_len, ref_len, correct_1..4, total_1..4];
summing any subset and applying BLEU gives that subset's corpus BLEU exactly (bootstrap, slices).
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = "Corpus BLEU (sacrebleu, 13a tokenizer, exp smoothing) on a 0-100 scale."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings.
    references: list of lists of references (every example the same number of references).
    lowercase: default False. tokenize: sacrebleu tokenizer name (default "13a").
Returns:
    bleu: corpus BLEU; scores: sentence BLEU per example; stats: segment statistics per example.
Examples:
    >>> m.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["bleu"]
    100.00000000000004
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, lowercase=False, tokenize="13a"):
        n_refs = {len(refs) for refs in references}
        if len(n_refs) != 1:
            raise ValueError("every example needs the same number of references for BLEU")
        transposed = [list(r) for r in zip(*references, strict=True)]
        bleu = BLEU(lowercase=lowercase, tokenize=tokenize, effective_order=False)
        corpus = bleu.corpus_score(list(predictions), transposed)
        stats = bleu._extract_corpus_statistics(list(predictions), transposed)
        sentence = BLEU(lowercase=lowercase, tokenize=tokenize, effective_order=True)
        scores = [
            sentence.sentence_score(p, list(refs)).score
            for p, refs in zip(predictions, references, strict=True)
        ]
        return {"bleu": corpus.score, "scores": scores, "stats": [[float(x) for x in row] for row in stats]}
