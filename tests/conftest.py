"""Test-suite wide settings: offline model loading, loopback only, markers; and the one local Ray cluster
fixture (`ray_cluster`) every test module that needs real Ray shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-long",
        action="store_true",
        default=False,
        help="run the fault suite (tests/reliability) at full length, e.g. a 30 s database outage",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ray_init(**kwargs): more `ray.init` arguments for the module's `ray_cluster` (e.g. runtime_env)",
    )


@pytest.fixture(scope="module")
def ray_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """A local 2-CPU Ray cluster for the requesting test module, shut down after it. A module marked
    `pytest.mark.ray_init(**kwargs)` passes those arguments to `ray.init` as well."""
    import ray

    marker = request.node.get_closest_marker("ray_init")
    extra = marker.kwargs if marker is not None else {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, **extra)
    try:
        yield
    finally:
        ray.shutdown()
