"""The loop state machine on a real registry + SQLite request log, with training and the eval gate faked
(they have their own integration tests): drift → dataset → training → register + gate → canary → promote;
a failed gate retires the challenger; a worse canary rolls back; a failed training keeps the champion;
a controller "killed" mid-run resumes from its last completed step; one loop at a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitoring.loop import (
    CANARY,
    DATASET_BUILT,
    FAILED,
    GATING,
    PROMOTED,
    REJECTED,
    ROLLED_BACK,
    TRAINED,
    TRAINING,
    TRIGGERED,
    LoopController,
    canary_experiment_name,
)
from monitoring.loop_store import LockHeldError
from monitoring.testing import LoopWorld, drift
from serving.registry.artifacts import NAME_MAX_LEN, check_name


@pytest.fixture()
def world(tmp_path: Path) -> LoopWorld:
    w = LoopWorld(tmp_path)
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(40):  # reference window: shipping traffic, answered well
        w.request("shipping", correct=True, at=start + timedelta(seconds=i))
    return w


def run_until(c: LoopController, states: tuple[str, ...], max_ticks: int = 12) -> str:
    state = ""
    for _ in range(max_ticks):
        state = c.tick().state
        if state in states:
            return state
    return state


def test_no_drift_no_trigger(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    for _ in range(40):
        world.request("shipping", correct=True)
    assert c.tick().state == "watching"
    assert world.trainings == []


def test_full_loop_promotes_and_records_lineage(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    drift(world)
    assert c.tick().state == TRIGGERED
    run = c.store.open_run()
    assert run is not None and run.data["drifted_slice"] == "refunds"
    assert c.tick().state == DATASET_BUILT
    cfg = c.store.open_run().data["training_config"]  # type: ignore[union-attr]
    assert cfg["style"] == "sequential" and cfg["init_adapter"]
    assert cfg["data"]["sources"][0]["tags"] == {"intent": "refunds"}
    # the stored config carries a placeholder, never the database URL (it may hold a password)...
    assert world.db_url not in json.dumps(c.store.open_run().data)  # type: ignore[union-attr]
    assert c.tick().state == TRAINING
    # ...the dispatched one has the real URL
    assert world.trainings[-1]["data"]["sources"][0]["database_url"] == world.db_url
    assert c.tick().state == TRAINED
    assert c.tick().state == CANARY
    challenger = world.registry.get("support", "challenger")
    assert challenger.parent == world.v1.ref  # lineage: trained from the champion
    exp = c.store.open_run().data["experiment"]  # type: ignore[union-attr]
    assert world.registry.get_experiment(exp).intercept == "support"
    assert c.tick().state == CANARY  # not enough canary traffic yet
    world.canary_traffic(exp, challenger.version, challenger_better=True)
    assert c.tick().state == PROMOTED
    assert world.registry.get("support", "champion").version == challenger.version
    assert not world.registry.get_experiment(exp).is_active
    kinds = [e.to_state for e in c.store.events() if e.kind == "transition"]
    assert kinds == [DATASET_BUILT, TRAINING, TRAINED, GATING, CANARY, PROMOTED]
    assert [v.version for v in world.registry.lineage("support", "champion")] == [
        challenger.version,
        world.v1.version,
    ]


def test_failed_gate_retires_the_challenger(world: LoopWorld) -> None:
    c = world.controller(gate_passes=False)
    c.store.acquire()
    drift(world)
    assert run_until(c, (REJECTED,)) == REJECTED
    assert world.registry.get("support", "champion").version == world.v1.version
    assert "challenger" not in world.registry.get("support", "champion").aliases
    assert all("challenger" not in v.aliases for v in world.registry.list("support"))


def test_worse_canary_rolls_back(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    drift(world)
    assert run_until(c, (CANARY,)) == CANARY
    exp = c.store.open_run().data["experiment"]  # type: ignore[union-attr]
    challenger = world.registry.get("support", "challenger")
    world.canary_traffic(exp, challenger.version, challenger_better=False)
    assert c.tick().state == ROLLED_BACK
    assert world.registry.get("support", "champion").version == world.v1.version


def test_progressive_canary_advances_step_by_step_then_promotes(world: LoopWorld) -> None:
    c = world.controller(canary__steps=[0.2, 0.5], canary__max_requests_per_step=10)
    c.store.acquire()
    drift(world)
    assert run_until(c, (CANARY,)) == CANARY
    run = c.store.open_run()
    assert run is not None
    first = run.data["experiment"]
    arms = {a.model: a.weight for a in world.registry.get_experiment(first).arms}
    assert arms == {"support@champion": pytest.approx(0.8), "support@challenger": pytest.approx(0.2)}
    challenger = world.registry.get("support", "challenger")
    for i in range(50):  # a 20 % step: 10 challenger, 40 champion requests; the challenger is better
        on_challenger = i % 5 == 0
        world.request(
            "refunds",
            correct=on_challenger,
            version=challenger.version if on_challenger else None,
            experiment=first,
            arm="support@challenger" if on_challenger else "support@champion",
        )
    assert c.tick().state == CANARY  # step 1 ends: not worse by mde (or its budget), on to 50 %
    run = c.store.open_run()
    assert run is not None
    second = run.data["experiment"]
    assert second == f"{first}-s2" and not world.registry.get_experiment(first).is_active
    assert {a.model: a.weight for a in world.registry.get_experiment(second).arms}[
        "support@challenger"
    ] == 0.5
    step_event = next(e for e in c.store.events() if e.kind == "canary_step")
    assert step_event.evidence["step"] == 1 and step_event.evidence["weight"] == 0.2
    assert step_event.evidence["n"] == {"champion": 40, "challenger": 10}
    assert {"ci_low", "ci_high", "p_value", "e_value", "srm_p_value", "guardrails"} <= set(
        step_event.evidence
    )
    world.canary_traffic(second, challenger.version, challenger_better=True)
    assert c.tick().state == PROMOTED
    assert world.registry.get("support", "champion").version == challenger.version
    done = c.store.runs(limit=1)[0]
    steps = done.data["canary"]["steps"]
    assert [(s["step"], s["weight"], s["decision"]) for s in steps] == [
        (1, 0.2, "advance"),
        (2, 0.5, "promote"),
    ]
    assert done.data["ab"]["arms"]["support@challenger"]["n"] == 50
    promoted = [e for e in c.store.events() if e.to_state == PROMOTED][0]
    assert promoted.evidence["canary"]["steps"][1]["reason"] == "non_inferior"


def test_a_failing_challenger_trips_the_error_guardrail(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    drift(world)
    assert run_until(c, (CANARY,)) == CANARY
    exp = c.store.open_run().data["experiment"]  # type: ignore[union-attr]
    challenger = world.registry.get("support", "challenger")
    world.canary_traffic(exp, challenger.version, challenger_better=True, per_arm=12, status_code=500)
    assert c.tick().state == ROLLED_BACK
    final = [e for e in c.store.events() if e.to_state == ROLLED_BACK][0]
    assert "guardrail tripped: error_rate" in final.message
    assert final.evidence["canary"]["last_look"]["reason"] == "guardrail"
    assert world.registry.get("support", "champion").version == world.v1.version
    assert not world.registry.get_experiment(exp).is_active


def test_a_canary_that_sees_no_decision_times_out(world: LoopWorld) -> None:
    c = world.controller(canary__timeout_s=0.01)
    c.store.acquire()
    drift(world)
    assert run_until(c, (CANARY,)) == CANARY
    assert c.tick().state == ROLLED_BACK
    assert [e for e in c.store.events() if e.to_state == ROLLED_BACK][0].evidence["canary"]["last_look"][
        "reason"
    ] == "timeout"


def test_failed_training_keeps_the_champion_and_backs_off(world: LoopWorld) -> None:
    world.train_ok = False
    c = world.controller()
    c.store.acquire()
    drift(world)
    assert run_until(c, (FAILED,)) == FAILED
    assert world.registry.get("support", "champion").version == world.v1.version
    drift(world, 20)
    # backing off: the next check does not trigger again right away
    assert c.tick().state == "watching"
    assert len(world.trainings) == 1


def test_restart_mid_training_resumes(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    drift(world)
    assert run_until(c, (TRAINING,)) == TRAINING
    # the process dies here: a new controller (new process) takes over the stale lock and resumes
    c2 = world.controller()
    c2.store.acquire(stale_after_s=0)
    assert c2.tick().state == TRAINING  # re-dispatches the training that died with the old process
    assert len(world.trainings) == 2
    assert run_until(c2, (CANARY,)) == CANARY
    assert any(e.kind == "resumed" for e in c2.store.events())


def test_one_loop_at_a_time(world: LoopWorld) -> None:
    c1 = world.controller()
    c1.store.acquire()
    c2 = world.controller()
    with pytest.raises(LockHeldError):
        c2.store.acquire()
    c1.store.release()
    c2.store.acquire()


def test_few_live_prompts_do_not_run_the_drift_test(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    for _ in range(12):  # fewer than the detector's minimum: no report, no error
        world.request("refunds", correct=False)
    reports, decision, context = c.check()
    assert [r for r in reports if "mmd" in r.detector] == []
    assert decision.outcome != "trigger" and context["n_live"] == 12


def test_a_failing_tick_does_not_kill_the_loop(world: LoopWorld) -> None:
    import threading

    c = world.controller(windows__check_interval_s=0.05)
    calls = {"n": 0}
    real_check = c.check

    def flaky_check() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return real_check()

    c.check = flaky_check  # type: ignore[method-assign]
    stop = threading.Event()
    seen: list[str] = []

    def on_tick(result: Any) -> None:
        seen.append(result.message)
        if len(seen) >= 3:
            stop.set()

    c.run(stop, on_tick=on_tick)
    assert "database hiccup" in seen[0] and len(seen) >= 3  # the loop kept ticking after the failure
    assert any(e.kind == "error" and "database hiccup" in e.message for e in c.store.events())


def test_loop_feeds_its_prometheus_metrics(world: LoopWorld) -> None:
    c = world.controller()
    c.store.acquire()
    drift(world)
    assert run_until(c, (CANARY,)) == CANARY
    text = c.metrics.render().decode()
    assert 'tuneloop_trainings_total{outcome="started"} 1.0' in text
    assert 'tuneloop_trainings_total{outcome="passed"} 1.0' in text
    assert 'tuneloop_loop_state{tuneloop_loop_state="canary"} 1.0' in text
    assert "tuneloop_drift_statistic{" in text  # the drift check that triggered the run
    assert 'scorer="reference"' in text  # scores per served version


@pytest.mark.parametrize("adapter", ["support", "a" * NAME_MAX_LEN, "b" * (NAME_MAX_LEN - 3)])
@pytest.mark.parametrize("index", [0, 1, 3])
def test_canary_experiment_names_are_valid_and_distinct_per_step(adapter: str, index: int) -> None:
    run_id = "run-0123456789abcdef"
    name = canary_experiment_name(adapter, run_id, index)
    assert check_name(name, "experiment name") == name
    assert name.startswith(adapter[:8]) and "-canary-abcdef" in name
    assert name.endswith(f"-s{index + 1}") == bool(index)
    assert canary_experiment_name(adapter, run_id, index + 1) != name
