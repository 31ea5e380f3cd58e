"""tuneloop evals: suites, metrics, the runner, the promotion gate, A/B statistics and reports.

Talks to models only over an OpenAI-compatible HTTP endpoint and reads the shared request log with
SQLAlchemy; never imports serving, training, monitoring or tuneloop. What the monitoring loop calls (`gate` is
imported from `evals.gate`: a package attribute of that name would be shadowed by the submodule):

    run = run_suite("support_target", "challenger", "http://127.0.0.1:8000/v1", out_dir=folder)
    decision = gate([champ_target, champ_regression], [chall_target, chall_regression])   # GateDecision
    live = ab_report("canary-42", "sqlite:///tuneloop.db")                                 # ABReport
    write_report(eval_report(runs, decision=decision), out_folder)
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): `import evals.metrics.answers` must not load the runner,
# scipy and matplotlib with it.
_EXPORTS = {
    "ABReport": "evals.ab",
    "ChatEndpoint": "evals.client",
    "EndpointError": "evals.errors",
    "EvalError": "evals.errors",
    "ExampleResult": "evals.results",
    "ExperimentDataError": "evals.errors",
    "GateCheck": "evals.gate",
    "GateDecision": "evals.gate",
    "GatePolicy": "evals.gate",
    "Metric": "evals.metrics",
    "MetricError": "evals.errors",
    "Report": "evals.report",
    "ReportFiles": "evals.report",
    "RetryPolicy": "evals.client",
    "RunDataError": "evals.errors",
    "RunOptions": "evals.runner",
    "RunResult": "evals.results",
    "Suite": "evals.suite",
    "SuiteError": "evals.errors",
    "TaskType": "evals.tasks",
    "ab_document": "evals.report",
    "ab_report": "evals.ab",
    "build_metric": "evals.metrics",
    "builtin_suite_names": "evals.suite",
    "eval_report": "evals.report",
    "get_metric_class": "evals.metrics",
    "list_experiments": "evals.ab",
    "load_experiment": "evals.ab",
    "load_suite": "evals.suite",
    "load_suite_data": "evals.suite",
    "metric_kinds": "evals.metrics",
    "register_metric": "evals.metrics",
    "register_task": "evals.tasks",
    "run_baselines": "evals.baseline",
    "run_suite": "evals.runner",
    "run_suite_async": "evals.runner",
    "write_report": "evals.report",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evals' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ABReport",
    "ChatEndpoint",
    "EndpointError",
    "EvalError",
    "ExampleResult",
    "ExperimentDataError",
    "GateCheck",
    "GateDecision",
    "GatePolicy",
    "Metric",
    "MetricError",
    "Report",
    "ReportFiles",
    "RetryPolicy",
    "RunDataError",
    "RunOptions",
    "RunResult",
    "Suite",
    "SuiteError",
    "TaskType",
    "ab_document",
    "ab_report",
    "build_metric",
    "builtin_suite_names",
    "eval_report",
    "get_metric_class",
    "list_experiments",
    "load_experiment",
    "load_suite",
    "load_suite_data",
    "metric_kinds",
    "register_metric",
    "register_task",
    "run_baselines",
    "run_suite",
    "run_suite_async",
    "write_report",
]
