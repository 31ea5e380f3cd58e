"""tuneloop evals: suites, metrics, the runner, the promotion gate, A/B statistics and reports.

Talks to models only over an OpenAI-compatible HTTP endpoint and reads the shared request log with
SQLAlchemy; never imports serving, training, monitoring or tuneloop. What the monitoring loop calls:

    run = run_suite("support_target", "challenger", "http://127.0.0.1:8000/v1", out_dir=folder)
    decision = gate([champ_target, champ_regression], [chall_target, chall_regression])   # GateDecision
    live = ab_report("canary-42", "sqlite:///tuneloop.db")                                 # ABReport
    write_report(eval_report(runs, decision=decision), out_folder)
"""

from evals.ab import ABReport, ab_report, list_experiments, load_experiment
from evals.baseline import run_baselines
from evals.client import ChatEndpoint, RetryPolicy
from evals.errors import EndpointError, EvalError, ExperimentDataError, MetricError, RunDataError, SuiteError
from evals.gate import GateCheck, GateDecision, GatePolicy, gate
from evals.metrics import Metric, build_metric, get_metric_class, metric_kinds, register_metric
from evals.report import Report, ReportFiles, ab_document, eval_report, write_report
from evals.results import ExampleResult, RunResult
from evals.runner import RunOptions, run_suite, run_suite_async
from evals.suite import Suite, builtin_suite_names, load_suite, load_suite_data
from evals.tasks import TaskType, register_task

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
    "gate",
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
