"""Code execution metric: pass@1 with each program run against its tests in the sandbox."""

from __future__ import annotations

import math

import numpy as np

from evals.errors import MetricError
from evals.metrics.base import Metric, MetricInput, MetricScores, compute_module, register_metric


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from n samples with c correct (Chen et al., 2021)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@register_metric("pass_at_1")
class PassAt1(Metric):
    """1 when the generated program passes the example's tests (reference column holds the tests)."""

    module = "code_exec"
    allowed_args = frozenset({"timeout_s", "memory_mb"})

    def _score(self, inputs: MetricInput) -> MetricScores:
        tests = []
        for example in inputs.examples:
            if not example.reference:
                raise MetricError(
                    f"metric {self.name!r}: example {example.id!r} has no tests in its reference"
                )
            tests.append(example.reference)
        out = compute_module(self.module, predictions=list(inputs.predictions), references=tests, **self.args)
        return MetricScores(
            out["scores"], np.array(out["stats"], dtype=float), float(out["pass@1"]), out["outcomes"]
        )
