"""The loop *process* killed with SIGKILL in a given state, then restarted: the new process takes over the
stale lock, resumes the open run from its last completed step (training is re-dispatched), the champion
never changes before a promotion, there is at most one open run and one challenger, and the run still
ends promoted. Real processes, real SQLite and registry; training (slow, faked) and the eval gate are
faked — their real paths have their own integration tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitoring.loop import CANARY, GATING, PROMOTED, TRAINING, LoopController
from monitoring.testing import LoopWorld, drift

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("loop_kill_worker.py")
ROOT = Path(__file__).resolve().parents[3]


class Worker:
    def __init__(self, world_dir: Path, train_delay_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(world_dir), str(train_delay_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
        self.states: list[str] = []

    def wait_for(self, states: tuple[str, ...], timeout_s: float = 90.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        buffer = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if not ready:
                assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}"
                continue
            buffer += os.read(self.proc.stdout.fileno(), 4096)
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            for line in lines:
                if line.startswith(b"STATE "):
                    state = line.split()[1].decode()
                    self.states.append(state)
                    if state in states:
                        return state
        raise AssertionError(f"no state in {states} within {timeout_s} s; seen {self.states[-10:]}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def canary_traffic(world: LoopWorld, controller: LoopController) -> None:
    run = controller.store.open_run()
    assert run is not None and run.state == CANARY
    exp = run.data["experiment"]
    challenger = world.registry.get("support", "challenger")
    world.canary_traffic(exp, challenger.version, challenger_better=True)


@pytest.mark.parametrize("kill_in", [TRAINING, GATING, CANARY])
def test_loop_killed_in_a_state_resumes_consistently(tmp_path: Path, kill_in: str) -> None:
    world = LoopWorld(tmp_path, train_delay_s=3.0)
    observer = world.controller()  # reads the shared state; never ticks
    for _ in range(40):
        world.request("shipping", correct=True)
    drift(world)

    first = Worker(tmp_path, train_delay_s=3.0)
    try:
        # GATING is passed within one tick (the faked gate is instant): kill right after TRAINED instead
        first.wait_for((kill_in,) if kill_in != GATING else ("trained",))
        first.kill()
    finally:
        first.stop()
    killed_run = observer.store.open_run()
    assert killed_run is not None, "the run must still be open after the kill"
    assert world.registry.get("support", "champion").version == world.v1.version

    time.sleep(2.5)  # the dead process's lock heartbeat goes stale
    second = Worker(tmp_path, train_delay_s=1.0)
    try:
        second.wait_for((CANARY,))
        runs = observer.store.runs(limit=10)
        assert [r.id for r in runs if not r.finished] == [killed_run.id]  # resumed, not restarted
        assert world.registry.get("support", "champion").version == world.v1.version
        challengers = [v for v in world.registry.list("support") if "challenger" in v.aliases]
        assert len(challengers) == 1
        canary_traffic(world, observer)
        second.wait_for((PROMOTED,))
    finally:
        second.stop()

    champion = world.registry.get("support", "champion")
    assert champion.version != world.v1.version and champion.parent == world.v1.ref
    events = observer.store.events()
    resumed = [e for e in events if e.kind == "resumed" and e.run_id == killed_run.id]
    assert resumed and killed_run.state in resumed[0].message
    transitions = [e.to_state for e in events if e.kind == "transition" and e.run_id == killed_run.id]
    assert transitions[-1] == PROMOTED
    assert transitions.count(PROMOTED) == 1
