"""The loop's dataset step when labels arrive late: a triggered run waits for `recipe.min_corrections`
(up to `recipe.wait_for_corrections_s`), then trains on the corrections that came in, or fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.loop import DATASET_BUILT, FAILED, TRIGGERED
from monitoring.testing import LoopWorld, drift


def _world(tmp_path: Path) -> LoopWorld:
    w = LoopWorld(tmp_path)
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(40):  # reference window: shipping traffic, answered well
        w.request("shipping", correct=True, at=start + timedelta(seconds=i))
    return w


def test_a_triggered_run_waits_for_late_corrections_then_builds_the_dataset(tmp_path: Path) -> None:
    world = _world(tmp_path)
    # drift(world) leaves 30 corrected refund answers: ask for more than that
    c = world.controller(recipe__min_corrections=40, recipe__wait_for_corrections_s=3600)
    c.store.acquire()
    drift(world)
    assert c.tick().state == TRIGGERED
    waiting = c.tick()
    assert waiting.state == TRIGGERED and "30 of 40" in waiting.message
    assert c.tick().state == TRIGGERED  # still waiting, and no second event for the same count
    run = c.store.open_run()
    assert run is not None
    events = [e for e in c.store.events(run.id) if e.kind == "waiting"]
    assert len(events) == 1 and events[0].evidence["feedback"]["corrections"] == 30
    assert world.trainings == []
    for _ in range(12):  # the triagers' labels arrive
        world.request("refunds", correct=False)
    assert c.tick().state == DATASET_BUILT
    run = c.store.open_run()
    assert run is not None and run.data["dataset"]["feedback"]["corrections"] == 42


def test_a_run_that_waited_long_enough_fails_for_lack_of_data(tmp_path: Path) -> None:
    world = _world(tmp_path)
    c = world.controller(recipe__min_corrections=40, recipe__wait_for_corrections_s=0)
    c.store.acquire()
    drift(world)
    assert c.tick().state == TRIGGERED
    failed = c.tick()
    assert failed.state == FAILED
    run = c.store.runs(limit=1)[0]
    assert run.outcome == FAILED and world.trainings == []
    last = c.store.events(run.id)[-1]
    assert "only 30 corrected examples" in last.message and "wait_for_corrections_s" in last.message


@pytest.mark.parametrize("recipe", ["dpo_retrain", "kto_retrain"])
def test_a_preference_recipe_keeps_its_style_and_starts_from_the_champion(
    tmp_path: Path, recipe: str
) -> None:
    world = _world(tmp_path)
    c = world.controller(recipe__training=recipe)
    c.store.acquire()
    drift(world)
    assert c.tick().state == TRIGGERED
    assert c.tick().state == DATASET_BUILT
    run = c.store.open_run()
    assert run is not None
    config = run.data["training_config"]
    assert config["style"] == recipe[:3]
    assert config["init_adapter"] == str(world.registry.local_path(world.v1))  # the champion: the reference
    assert config["preference"]["beta"] == 0.1 and config["train"]["learning_rate"] == 5.0e-5
    (source,) = config["data"]["sources"]
    assert source["kind"] == "request_log" and source["tags"] == {"intent": "refunds"}
    # what the loop dispatches is a valid training config (records follow the style)
    from training.config import TrainingConfig

    checked = TrainingConfig.model_validate(c._materialize(config))
    assert checked.style == recipe[:3]


def test_recipes_are_found_by_name_and_a_preference_recipe_refuses_sft_replay(tmp_path: Path) -> None:
    from monitoring.spec import SpecError, parse_spec

    base = {"adapter": "a", "suites": {"target": "general_qa"}, "state_dir": str(tmp_path)}
    with pytest.raises(SpecError, match=r"did you mean 'dpo_retrain'"):
        parse_spec({**base, "recipe": {"training": "dpo_retrian"}})
    chat = tmp_path / "replay.jsonl"
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(SpecError, match="holds chat records"):
        parse_spec({**base, "recipe": {"training": "dpo_retrain", "replay": str(chat)}})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    spec = parse_spec({**base, "recipe": {"training": "dpo_retrain", "replay": str(pairs)}})
    assert spec.recipe.style() == "dpo"
    assert parse_spec(base).recipe.style() is None  # the default recipe: supervised
