"""VLLMEngine against real vLLM on the default model: chat and completion generation, streaming deltas,
n>1, context-length errors, early close (abort), LoRA load/generate/unload (compared with peft), and a
corrupt adapter that must fail cleanly while the engine keeps serving. One engine for the module."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from serving.engine.base import (
    Engine,
    EngineError,
    GenerationChunk,
    GenerationRequest,
    LoRASpec,
    PromptTooLongError,
    SamplingSettings,
)
from serving.engine.vllm_engine import VLLMEngine, VLLMEngineConfig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

MAX_MODEL_LEN = 512
PROBE = "The capital of France is"
PROBE_TOKENS = 10


@dataclass(frozen=True)
class Adapter:
    spec: LoRASpec
    peft_greedy: str  # peft's greedy continuation of PROBE (PROBE_TOKENS tokens)


@pytest.fixture(scope="module")
def references(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Adapter]:
    """HF greedy continuation of PROBE with the base, and a random-init peft LoRA adapter (r=8, q/v)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    model = AutoModelForCausalLM.from_pretrained(default_model_path, dtype=torch.float32)
    inputs = tokenizer(PROBE, return_tensors="pt")

    def greedy(m: torch.nn.Module) -> str:
        with torch.no_grad():
            out = m.generate(**inputs, max_new_tokens=PROBE_TOKENS, do_sample=False)  # type: ignore[operator]
        return str(tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True))

    base_text = greedy(model)
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    folder = tmp_path_factory.mktemp("adapters") / "random-lora"
    peft_model.save_pretrained(str(folder))
    adapter = Adapter(
        LoRASpec(name="random-lora@0001", lora_int_id=101, path=str(folder)), greedy(peft_model)
    )
    return base_text, adapter


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(default_model_path: Path, references: tuple[str, Adapter]) -> AsyncIterator[VLLMEngine]:
    eng = VLLMEngine(
        VLLMEngineConfig(
            model=str(default_model_path), max_model_len=MAX_MODEL_LEN, cpu_kvcache_space_gib=1, max_loras=2
        )
    )
    await eng.start()
    processes = eng.process_ids
    assert processes, "vLLM's engine core runs in its own process"
    try:
        yield eng
    finally:
        await eng.shutdown()
        assert not [pid for pid in processes if _alive(pid)], "shutdown left vLLM processes running"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _request(
    *, prompt: str | None = None, messages: tuple[dict[str, str], ...] | None = None, **sampling: object
) -> GenerationRequest:
    settings = SamplingSettings(**{"max_tokens": 16, "temperature": 0.0, **sampling})  # type: ignore[arg-type]
    return GenerationRequest(f"test-{uuid.uuid4().hex[:8]}", settings, prompt=prompt, messages=messages)


async def _collect(engine: VLLMEngine, request: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in engine.generate(request)]


def _text(chunks: list[GenerationChunk], index: int = 0) -> str:
    return "".join(chunk.text for chunk in chunks if chunk.index == index)


async def test_engine_satisfies_protocol(engine: VLLMEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.model_id == "SmolLM2-135M-Instruct"
    assert engine.max_model_len == MAX_MODEL_LEN
    await engine.check_health()


async def test_chat_generation(engine: VLLMEngine) -> None:
    request = _request(
        messages=({"role": "user", "content": "What is the capital of France?"},), max_tokens=24
    )
    chunks = await _collect(engine, request)
    assert "Paris" in _text(chunks)
    assert chunks[-1].finish_reason in ("stop", "length")
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])
    counts = [chunk.completion_tokens for chunk in chunks]
    assert counts == sorted(counts) and 0 < counts[-1] <= 24
    # The prompt went through the chat template: far more tokens than the user's words.
    assert chunks[0].prompt_tokens == await engine.count_prompt_tokens(request) > 20


async def test_completion_deltas_concatenate_to_the_reference_text(
    engine: VLLMEngine, references: tuple[str, Adapter]
) -> None:
    base_text, _ = references
    chunks = await _collect(engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS))
    assert len(chunks) > 2  # really streamed, one delta per step
    assert _text(chunks) == base_text
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == PROBE_TOKENS
    assert chunks[0].prompt_tokens == 5


async def test_n2_streams_two_indexed_choices(engine: VLLMEngine) -> None:
    chunks = await _collect(
        engine, _request(prompt="Once upon a time", n=2, temperature=0.9, seed=7, max_tokens=8)
    )
    assert {chunk.index for chunk in chunks} == {0, 1}
    for index in (0, 1):
        mine = [chunk for chunk in chunks if chunk.index == index]
        assert mine[-1].finish_reason in ("stop", "length")
        assert mine[-1].completion_tokens <= 8 and _text(chunks, index)
    with pytest.raises(ValueError, match="temperature"):
        await _collect(engine, _request(prompt="hi", n=2, temperature=0.0))


async def test_prompt_too_long(engine: VLLMEngine) -> None:
    with pytest.raises(PromptTooLongError) as info:
        await _collect(engine, _request(prompt="hello " * 600))
    assert info.value.max_model_len == MAX_MODEL_LEN
    fits_alone = _request(prompt="hello " * 400, max_tokens=200)
    prompt_tokens = await engine.count_prompt_tokens(fits_alone)
    assert prompt_tokens < MAX_MODEL_LEN < prompt_tokens + 200
    with pytest.raises(PromptTooLongError):
        await _collect(engine, fits_alone)
    assert engine.num_unfinished_requests() == 0  # rejected before submission


async def test_closing_the_stream_aborts_the_request(engine: VLLMEngine) -> None:
    stream = engine.generate(_request(prompt="Tell me a long story.", max_tokens=200, temperature=0.8))
    first = await anext(stream)
    assert first.finish_reason is None
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(50):
        if engine.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.num_unfinished_requests() == 0


async def test_lora_load_generate_unload(engine: VLLMEngine, references: tuple[str, Adapter]) -> None:
    base_text, adapter = references
    await engine.load_lora(adapter.spec)
    assert await engine.list_loras() == [adapter.spec.name]

    request = _request(prompt=PROBE, max_tokens=PROBE_TOKENS)
    with_adapter = _text(await _collect(engine, dataclasses.replace(request, lora=adapter.spec)))
    assert with_adapter != base_text
    assert with_adapter == adapter.peft_greedy  # vLLM's LoRA kernels agree with peft

    await engine.unload_lora(adapter.spec)
    assert await engine.list_loras() == []
    await engine.unload_lora(adapter.spec)  # unloading twice is a no-op
    assert _text(await _collect(engine, request)) == base_text


async def test_corrupt_adapter_fails_cleanly_and_engine_keeps_serving(
    engine: VLLMEngine, references: tuple[str, Adapter], tmp_path: Path
) -> None:
    base_text, adapter = references
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text(
        (Path(adapter.spec.path) / "adapter_config.json").read_text()
    )
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(EngineError, match="corrupt@0002"):
        await engine.load_lora(LoRASpec(name="corrupt@0002", lora_int_id=102, path=str(corrupt)))
    with pytest.raises(EngineError, match="adapter_config.json"):
        await engine.load_lora(LoRASpec(name="missing@0003", lora_int_id=103, path=str(tmp_path / "nope")))

    await engine.check_health()
    assert "corrupt@0002" not in await engine.list_loras()
    assert _text(await _collect(engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS))) == base_text


async def test_config_validation_and_cpu_engine_args(
    default_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="max_lora_rank"):
        VLLMEngineConfig(model="m", max_lora_rank=12)
    with pytest.raises(ValueError, match="max_cpu_loras"):
        VLLMEngineConfig(model="m", max_loras=4, max_cpu_loras=2)
    config = VLLMEngineConfig(
        model=str(default_model_path), served_model_id="base", engine_kwargs={"max_num_seqs": 7}
    )
    engine = VLLMEngine(config)
    assert engine.model_id == "base"
    if engine.device != "cpu":
        pytest.skip("CPU defaults only")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")  # set by the operator: left alone
    args = engine.engine_args()
    assert (args.dtype, args.enforce_eager, args.max_num_seqs) == ("float32", True, 7)
    assert (args.enable_lora, args.max_loras, args.max_lora_rank) == (True, 4, 16)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
