"""`evaluate` module: pass@1 of generated code, each program run with its tests in a sandboxed subprocess.

Shipped with tuneloop's evals package and loaded offline with `evaluate.load(<this folder>)`.
The sandbox (evals.metrics.sandbox) runs `python -I` in a fresh temp dir with CPU-time, memory, file-size
and process limits, a wall-clock timeout, no network (network namespace where available, plus an audit
hook that blocks sockets and subprocesses), and kills the whole process group afterwards.
"""

import datasets
import evaluate

from evals.metrics.sandbox import SandboxLimits, run_python

_DESCRIPTION = "pass@1: fraction of programs whose tests pass (one sample per problem)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of programs (strings).
    references: list of test code (asserts) run after each program.
    timeout_s: wall-clock limit per program (default 10). memory_mb: address-space limit (default 512).
Returns:
    pass@1: fraction passed; scores: 1.0/0.0 per example; stats: [[passed, 1], ...];
    outcomes: status per example.
Examples:
    >>> m.compute(predictions=["def f():\\n    return 1"], references=["assert f() == 1"])["pass@1"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CodeExec(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Chen et al., 2021. Evaluating Large Language Models Trained on Code.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, timeout_s=10.0, memory_mb=512):
        limits = SandboxLimits(timeout_s=float(timeout_s), memory_mb=int(memory_mb))
        scores, outcomes = [], []
        for program, tests in zip(predictions, references, strict=True):
            outcome = run_python(f"{program}\n\n{tests}\n", limits)
            scores.append(1.0 if outcome.passed else 0.0)
            outcomes.append({"status": outcome.status, "detail": outcome.detail})
        return {
            "pass@1": sum(scores) / len(scores) if scores else float("nan"),
            "scores": scores,
            "stats": [[s, 1.0] for s in scores],
            "outcomes": outcomes,
        }
