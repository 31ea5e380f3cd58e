"""`engine.tool_call_parser` and `engine.scheduling_policy` in the serving settings reach vLLM's engine
config, and a tool parser name vLLM does not know is refused before the model loads, with the names it
does know."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.config import ServingConfig
from serving.engine.base import EngineError
from serving.engine.vllm_engine import VLLMEngine, VLLMEngineConfig
from serving.runtime import make_engine


def test_the_settings_reach_the_engine(tmp_path: Path) -> None:
    config = ServingConfig.model_validate({"engine": {"tool_call_parser": "llama3_json"}})
    engine = make_engine(config, tmp_path, "base")
    assert isinstance(engine, VLLMEngine) and engine.config.tool_call_parser == "llama3_json"
    assert engine.config.scheduling_policy == "priority"  # control generations overtake the queue
    fcfs = make_engine(ServingConfig.model_validate({"engine": {"scheduling_policy": "fcfs"}}), tmp_path, "b")
    assert isinstance(fcfs, VLLMEngine) and fcfs.config.scheduling_policy == "fcfs"


def test_an_unknown_parser_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    engine = VLLMEngine(VLLMEngineConfig(model=str(tmp_path), tool_call_parser="hermez"))
    with pytest.raises(EngineError, match=r"'hermez' is not a vLLM tool parser \(did you mean 'hermes'\?\)"):
        asyncio.run(engine.start())
    assert engine._engine is None
