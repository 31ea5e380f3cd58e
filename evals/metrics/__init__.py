"""Metrics registry: every metric kind registered by name, computed through shipped `evaluate` modules.

Import this package to register the built-in kinds: exact_match, contains_answer, rouge1, rouge2, rougeL,
bleu, chrf, accuracy, f1, pass_at_1, llm_judge. They live in the registry `METRICS`; add a kind
with `@register_metric("name")` on a `Metric`.
"""

from evals.metrics import classification, code, judge, text  # noqa: F401  (registers the built-in kinds)
from evals.metrics.base import (
    METRICS,
    JudgeEndpoint,
    Metric,
    MetricInput,
    MetricScores,
    build_metric,
    get_metric_class,
    load_module,
    mean_rows,
    metric_kinds,
    ratio_statistic,
    register_metric,
)
from evals.metrics.code import pass_at_k

__all__ = [
    "METRICS",
    "JudgeEndpoint",
    "Metric",
    "MetricInput",
    "MetricScores",
    "build_metric",
    "get_metric_class",
    "load_module",
    "mean_rows",
    "metric_kinds",
    "pass_at_k",
    "ratio_statistic",
    "register_metric",
]
