"""The loop as a Ray actor (real Ray, real actor process): it watches, triggers and trains; when its
process is killed with SIGKILL mid-training Ray restarts the actor, the new incarnation takes over the
stale lock and resumes the same run through canary to promotion. Training and the gate are faked
(`monitoring.testing`); their real paths have their own integration tests."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitoring.actor import start_loop_actor
from monitoring.loop import CANARY, PROMOTED, TRAINING
from monitoring.testing import LoopWorld, WorldControllerFactory, drift

pytestmark = [
    pytest.mark.integration,
    # the actor process gets the checkout on its import path
    pytest.mark.ray_init(runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}}),
]


def poll(
    fetch: Callable[[], dict[str, Any]], until: Callable[[dict[str, Any]], bool], timeout_s: float
) -> Any:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = fetch()
        except Exception as exc:  # noqa: BLE001 - the actor is restarting
            last = {"error": repr(exc)}
        if until(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"condition not met in {timeout_s} s; last status {last}")


def test_loop_actor_restarted_by_ray_resumes_the_run(ray_cluster: None, tmp_path: Path) -> None:
    import ray

    world = LoopWorld(tmp_path, train_delay_s=4.0)
    for _ in range(40):
        world.request("shipping", correct=True)
    drift(world)
    actor = start_loop_actor(
        WorldControllerFactory(tmp_path, train_delay_s=4.0), name="loop-it", lock_retry_s=0.5
    )

    def status() -> dict[str, Any]:
        return dict(ray.get(actor.status.remote(), timeout=30))

    first = poll(status, lambda s: s.get("state") == TRAINING, 120)
    run_id, pid = first["run"], first["actor_pid"]
    os.kill(pid, signal.SIGKILL)  # the actor's process dies mid-training

    restarted = poll(
        status, lambda s: s.get("actor_pid") not in (None, pid) and s.get("state") == CANARY, 180
    )
    assert restarted["run"] == run_id  # the same run resumed, not a new one
    assert world.registry.get("support", "champion").version == world.v1.version

    observer = world.controller()
    exp = observer.store.open_run().data["experiment"]  # type: ignore[union-attr]
    challenger = world.registry.get("support", "challenger")
    world.canary_traffic(exp, challenger.version, challenger_better=True)
    done = poll(status, lambda s: any(r["outcome"] == PROMOTED for r in s.get("recent_runs", [])), 120)
    assert done["champion"].split("@")[1] == challenger.version
    events = observer.store.events(run_id)
    assert any(e.kind == "resumed" and TRAINING in e.message for e in events)
    assert ray.get(actor.stop.remote(), timeout=60) is True
    ray.kill(actor)
