"""Shared helpers of the deploy tests: repository paths and the metric names the code exports."""

from __future__ import annotations

import pytest


def exported_sample_names() -> set[str]:
    """Every series name the code's Prometheus registries can expose (counter/histogram suffixes included)."""
    from monitoring.metrics import LoopMetrics
    from serving.metrics import ServingMetrics

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for registry in (ServingMetrics().registry, LoopMetrics().registry):
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


@pytest.fixture(scope="session")
def metric_names() -> set[str]:
    return exported_sample_names()
