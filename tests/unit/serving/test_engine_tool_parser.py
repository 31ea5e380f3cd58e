"""`engine.tool_call_parser`, `engine.scheduling_policy`, `engine.structured_outputs_backend` and
`engine.stream_interval` in the serving settings reach vLLM's engine config; a tool parser name vLLM does
not know is refused before the model loads, with the names it does know; a client `priority` on an fcfs
engine is a 400 naming it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from serving.config import ServingConfig
from serving.engine.base import (
    CONTROL_PRIORITY,
    EngineError,
    GenerationRequest,
    InvalidParameterError,
    SamplingSettings,
)
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


def test_structured_output_backend_and_stream_interval_reach_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every constrained request compiles on the configured backend (xgrammar by default); vLLM's "auto" is
    not a choice, as its engine compiles everything with the first constrained request's backend."""
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.setenv(key, os.environ.get(key, "2"))
    default = make_engine(ServingConfig(), tmp_path, "a")
    assert isinstance(default, VLLMEngine)
    assert default.engine_args().structured_outputs_config.backend == "xgrammar"
    config = ServingConfig.model_validate({"engine": {"structured_outputs_backend": "guidance"}})
    guidance = make_engine(config, tmp_path, "b")
    assert isinstance(guidance, VLLMEngine)
    assert guidance.engine_args().structured_outputs_config.backend == "guidance"
    assert default.engine_args().stream_interval == 1  # vLLM's default: a chunk per token
    chunky = make_engine(ServingConfig.model_validate({"engine": {"stream_interval": 4}}), tmp_path, "c")
    assert isinstance(chunky, VLLMEngine) and chunky.engine_args().stream_interval == 4
    with pytest.raises(ValueError, match="structured_outputs_backend"):
        ServingConfig.model_validate({"engine": {"structured_outputs_backend": "auto"}})


def test_a_client_priority_needs_the_priority_scheduler(tmp_path: Path) -> None:
    engine = VLLMEngine(VLLMEngineConfig(model=str(tmp_path), scheduling_policy="fcfs"))

    async def first(priority: int) -> None:
        request = GenerationRequest("r", SamplingSettings(), prompt="hi", priority=priority)
        await engine.generate(request).__anext__()

    with pytest.raises(InvalidParameterError, match="priority scheduler") as info:
        asyncio.run(first(3))
    assert info.value.param == "priority"
    for allowed in (0, CONTROL_PRIORITY):  # no client priority; the service's own, dropped under fcfs
        with pytest.raises(EngineError, match="not started"):
            asyncio.run(first(allowed))
