"""Is fine-tuning worth it? The same suite for zero-shot base, k-shot base and the fine-tuned model.

The k-shot prompts take examples from the suite's train split (deterministically per example), so the
report can put adapter vs few-shot base vs zero-shot base side by side, paired on the same test examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.errors import SuiteError
from evals.results import RunResult
from evals.runner import run_suite
from evals.suite import Suite, load_suite, load_suite_data


def run_baselines(
    suite: str | Path | Suite,
    *,
    base_model: str,
    model: str,
    base_url: str,
    k_shot: int = 3,
    **kwargs: Any,
) -> list[RunResult]:
    """Runs in report order: base zero-shot (the baseline of the deltas), base k-shot, then `model` zero-shot.

    Extra keyword arguments go to `run_suite` (out_dir, limit, options, judge_model, ...).
    """
    loaded = load_suite(suite)
    if k_shot > 0 and not load_suite_data(loaded).train_examples:
        raise SuiteError(
            f"suite {loaded.name!r} has no train split, so there is nothing to draw {k_shot} shots from"
        )
    runs = [run_suite(loaded, base_model, base_url, k_shot=0, **kwargs)]
    if k_shot > 0:
        runs.append(run_suite(loaded, base_model, base_url, k_shot=k_shot, **kwargs))
    runs.append(run_suite(loaded, model, base_url, k_shot=0, **kwargs))
    return runs
