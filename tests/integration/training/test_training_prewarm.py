"""Pre-warming a training worker (`training.dispatch.prewarm`, called by the loop when a run is
triggered): the next training task through Ray runs in the warmed worker process, whose recipe imports
are done, and without Ray initialised nothing is started."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from training.api import train
from training.dispatch import prewarm

pytestmark = pytest.mark.integration


def test_without_ray_prewarm_starts_nothing() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    assert prewarm() is None
    assert not ray.is_initialized()


def test_the_next_training_task_runs_in_the_warmed_worker(
    ray_cluster: None, default_model_path: Path, tmp_path: Path, tiny_config: Callable[..., dict[str, Any]]
) -> None:
    import ray

    warm = ray.get(prewarm(), timeout=300)
    assert warm["pid"] > 0 and warm["import_s"] > 0
    result = train(
        tiny_config(default_model_path, tmp_path, train__max_steps=1, train__eval_every_steps=None),
        use_ray=True,
    )
    assert result.ok, result.error
    pids = [int(m.group(1)) for line in result.log if (m := re.search(r"worker started \(pid (\d+)", line))]
    assert pids == [warm["pid"]]
