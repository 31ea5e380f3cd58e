"""Real LoRA training of the default model on CPU from tool-calling traffic in the request log (in-process,
a handful of steps): requests served with tools and a named or required tool choice, accepted or
corrected, train an adapter like any other traffic; the data card counts them and the held-out records keep
their tools and calls for evals."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from training.api import train

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon", "Prague", "Dublin", "Warsaw"]


def write_log(url: str) -> None:
    """Served requests as serving logs them: half named (the answer is the arguments), half required (vLLM's
    array); a few corrected (the correction states the calls)."""
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
            corrected = i % 6 == 5
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
                    response=response if not corrected else json.dumps({"city": "Atlantis"}),
                    status_code=200,
                    stream=False,
                    tools=json.dumps({"tool_choice": choice, "tools": [WEATHER]}),
                    tool_calls=json.dumps(
                        [
                            {
                                "name": "get_weather",
                                "arguments": arguments if not corrected else '{"city": "Atlantis"}',
                            }
                        ]
                    ),
                )
            )
            conn.execute(
                feedback_table.insert().values(
                    request_id=f"r{i}",
                    created_at=datetime(2026, 11, 20, 13, i, tzinfo=UTC),
                    thumbs=-1 if corrected else 1,
                    correction=json.dumps([{"name": "get_weather", "arguments": {"city": city}}])
                    if corrected
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
