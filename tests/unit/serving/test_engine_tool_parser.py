"""`engine.tool_call_parser` and `engine.scheduling_policy` in the serving settings reach vLLM's engine
config, and a tool parser name vLLM does not know is refused before the model loads, with the names it
does know."""

from __future__ import annotations

import asyncio
import os
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


def test_the_step_token_budget_reaches_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`engine.max_num_batched_tokens` becomes vLLM's chunked-prefill budget; on CPU, unset means tuneloop's
    measured default instead of vLLM's 2048 (control calls wait for at most one short step)."""
    from serving.engine import vllm_engine
    from serving.engine.devices import DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS

    monkeypatch.setattr(vllm_engine, "detect_device", lambda: "cpu")
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.setenv(key, os.environ.get(key, "2"))  # engine_args sets CPU defaults: keep them local
    unset = make_engine(ServingConfig(), tmp_path, "a")
    assert isinstance(unset, VLLMEngine) and unset.config.max_num_batched_tokens is None
    assert unset.engine_args().max_num_batched_tokens == DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS
    config = ServingConfig.model_validate({"engine": {"max_num_batched_tokens": 512}})
    chosen = make_engine(config, tmp_path, "b")
    assert isinstance(chosen, VLLMEngine) and chosen.engine_args().max_num_batched_tokens == 512
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        ServingConfig.model_validate({"engine": {"max_num_batched_tokens": 4}})


def test_an_unknown_parser_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    engine = VLLMEngine(VLLMEngineConfig(model=str(tmp_path), tool_call_parser="hermez"))
    with pytest.raises(EngineError, match=r"'hermez' is not a vLLM tool parser \(did you mean 'hermes'\?\)"):
        asyncio.run(engine.start())
    assert engine._engine is None
