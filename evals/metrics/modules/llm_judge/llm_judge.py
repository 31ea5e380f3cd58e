"""`evaluate` module: turn an LLM judge's replies into scores in [0, 1].

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
The judge's calls happen in evals.metrics.judge; this module only parses "Score: N" (1..scale_max) from
each reply. A reply without a parsable score is *not scored* (stats row [0, 0]) rather than scored 0.
"""

import re

import datasets
import evaluate

_DESCRIPTION = "Parse 'Score: N' from judge replies and normalise to [0, 1]; unparsable replies are excluded."
_KWARGS_DESCRIPTION = """
Args:
    predictions: the judge's replies.
    references: unused placeholder strings (one per reply).
    scale_max: highest score on the rubric (default 5; lowest is 1).
Returns:
    llm_judge: mean normalised score over parsable replies; scores (None where unparsable); stats; parsed.
Examples:
    >>> m.compute(predictions=["Reasoning... Score: 5"], references=[""])["llm_judge"]
    1.0
"""

_SCORE = re.compile(r"score\s*(?:[:=]|is)?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE)


def parse_score(reply, scale_max):
    matches = _SCORE.findall(reply)
    if not matches:
        stripped = reply.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
            matches = [(stripped, "")]
        else:
            return None
    value = float(matches[-1][0])
    if value < 1 or value > scale_max:
        return None
    return value


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LlmJudge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Zheng et al., 2023. Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, scale_max=5):
        parsed = [parse_score(reply, scale_max) for reply in predictions]
        scores = [None if p is None else (p - 1.0) / (scale_max - 1.0) for p in parsed]
        valid = [s for s in scores if s is not None]
        return {
            "llm_judge": sum(valid) / len(valid) if valid else float("nan"),
            "scores": scores,
            "stats": [[0.0, 0.0] if s is None else [s, 1.0] for s in scores],
            "parsed": parsed,
        }
