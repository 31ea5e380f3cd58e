"""Real LoRA training of the default model on CPU from tool-calling traffic in the request log (in-process,
a handful of steps): requests served with tools and a named or required tool choice, accepted or
corrected, train an adapter like any other traffic - by SFT, and by DPO on the pairs their corrections make
(chosen = the corrected calls, rejected = the served ones); the data card counts them and the held-out
records keep their tools and calls for evals."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from unit.training.data.tool_records import WEATHER  # one copy of the tool definitions (see that module)

from training.api import train

pytestmark = pytest.mark.integration

CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon", "Prague", "Dublin", "Warsaw"]


def write_log(url: str, corrected: Callable[[int], bool] = lambda i: i % 6 == 5) -> None:
    """Served requests as serving logs them: half named (the answer is the arguments), half required (vLLM's
    array); the `corrected` ones called the tool for Atlantis, and their correction states the right call."""
    import sqlalchemy as sa

    from common.log_schema import create_log_tables, feedback_table, requests_table

    engine = sa.create_engine(url)
    create_log_tables(engine)
    with engine.begin() as conn:
        for i in range(24):
            city = CITIES[i % len(CITIES)]
            named = i % 2 == 0
            choice: Any = {"type": "function", "function": {"name": "get_weather"}} if named else "required"
            arguments = json.dumps({"city": city})
            response = (
                arguments if named else json.dumps([{"name": "get_weather", "parameters": {"city": city}}])
            )
            wrong = corrected(i)
            conn.execute(
                requests_table.insert().values(
                    id=f"r{i}",
                    created_at=datetime(2026, 11, 20, 12, i, tzinfo=UTC),
                    endpoint="chat.completions",
                    model_requested="weather",
                    served_name="weather",
                    prompt=json.dumps(
                        [{"role": "user", "content": f"Request {i}: what is the weather in {city}?"}]
                    ),
                    response=response if not wrong else json.dumps({"city": "Atlantis"}),
                    status_code=200,
                    stream=False,
                    tools=json.dumps({"tool_choice": choice, "tools": [WEATHER]}),
                    tool_calls=json.dumps(
                        [
                            {
                                "name": "get_weather",
                                "arguments": arguments if not wrong else '{"city": "Atlantis"}',
                            }
                        ]
                    ),
                )
            )
            conn.execute(
                feedback_table.insert().values(
                    request_id=f"r{i}",
                    created_at=datetime(2026, 11, 20, 13, i, tzinfo=UTC),
                    thumbs=-1 if wrong else 1,
                    correction=json.dumps([{"name": "get_weather", "arguments": {"city": city}}])
                    if wrong
                    else None,
                )
            )
    engine.dispose()


def test_tool_calling_traffic_trains_an_adapter(
    tiny_config: Callable[..., dict[str, Any]], default_model_path: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(url)
    config = tiny_config(
        default_model_path,
        tmp_path / "runs",
        name="it-tools",
        data={
            "sources": [{"kind": "request_log", "database_url": url, "served_name": "weather"}],
            "max_seq_length": 128,
            "split": {"validation": 0.25, "test": 0},
        },
    )
    result = train(config, use_ray=False)
    assert result.ok, result.error
    m = result.metrics
    assert m["steps"] == 4 and m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_loss_last"] < m["eval_loss_first"]

    assert result.adapter_dir is not None and result.run_dir is not None
    card = json.loads((result.run_dir / "data_card.json").read_text())
    assert card["dropped"] == {}
    counted = sum(c["tool_call_answers"] for c in card["tool_calling"].values())
    assert counted == sum(card["splits"].values()) == 24
    held_out = [
        json.loads(line) for line in (result.run_dir / "data" / "validation.jsonl").read_text().splitlines()
    ]
    assert held_out and all(r["tools"] == [WEATHER] for r in held_out)
    assert all(r["messages"][-1]["tool_calls"][0]["function"]["name"] == "get_weather" for r in held_out)
    assert not any("Atlantis" in json.dumps(r) for r in held_out)  # corrected calls replaced the served ones


def test_corrected_tool_calls_train_a_dpo_adapter(
    tiny_config: Callable[..., dict[str, Any]], default_model_path: Path, tmp_path: Path
) -> None:
    """Every request called the tool for Atlantis and was corrected: 24 pairs, chosen = the corrected call,
    rejected = the served one, in the format serving parses (SmolLM2's template shows no tools: the named
    choice's answer is the arguments JSON, the required one vLLM's array). A few DPO steps must move the
    held-out loss below log 2, i.e. a positive reward margin for the corrected calls."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    write_log(url, corrected=lambda i: True)
    config = tiny_config(
        default_model_path,
        tmp_path / "runs",
        name="it-tools-dpo",
        style="dpo",
        data={
            "sources": [
                {
                    "kind": "request_log",
                    "database_url": url,
                    "served_name": "weather",
                    "records": "preference",
                }
            ],
            "max_seq_length": 128,
            "split": {"validation": 0.25, "test": 0},
        },
        preference={"beta": 0.1},
        train__max_steps=3,
        train__eval_every_steps=3,
        train__learning_rate=5e-4,
    )
    result = train(config, use_ray=False)
    assert result.ok, result.error
    m = result.metrics
    assert abs(m["train_loss_first"] - math.log(2)) < 1e-3  # policy == reference at step 1
    assert m["final_eval_loss"] < math.log(2) and m["eval_reward_margin_last"] > 0
    assert m["reward_margin_last"] > m["reward_margin_first"]

    assert result.run_dir is not None
    card = json.loads((result.run_dir / "data_card.json").read_text())
    assert card["dropped"] == {}
    assert sum(c["pairs"] for s, c in card["preference"].items() if s != "style") == 24
    assert sum(c["tool_call_answers"] for c in card["tool_calling"].values()) == 24
    held_out = [
        json.loads(line) for line in (result.run_dir / "data" / "validation.jsonl").read_text().splitlines()
    ]
    assert held_out and all(r["kind"] == "preference" and r["tools"] == [WEATHER] for r in held_out)
    for r in held_out:
        assert r["rejected_calls"][0]["function"]["arguments"] == {"city": "Atlantis"}
        assert r["chosen_calls"][0]["function"]["arguments"]["city"] in CITIES
