"""VLLMEngine against real vLLM on the default model: chat and completion generation, streaming deltas,
n>1 (sampled, and greedy = identical copies), context-length errors, early close (abort), LoRA
load/generate/unload (compared with peft), a corrupt adapter that must fail cleanly while the engine keeps
serving; and (issue 15) vLLM's sampling extensions, structured outputs (JSON schema / any object, base and
adapter, a schema the backend cannot compile), generated and prompt log-probabilities (compared with
transformers) and token-id prompts. One engine for the module."""

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
    InvalidParameterError,
    LoRASpec,
    PromptTooLongError,
    SamplingSettings,
    StructuredOutput,
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
    # issue 15: greedy n > 1 is allowed (OpenAI answers n identical choices); it used to raise ValueError
    greedy = await _collect(engine, _request(prompt=PROBE, n=3, temperature=0.0, max_tokens=PROBE_TOKENS))
    assert {chunk.index for chunk in greedy} == {0, 1, 2}
    assert _text(greedy, 0) == _text(greedy, 1) == _text(greedy, 2)
    assert [c.completion_tokens for c in greedy if c.index == 2 and c.finish_reason] == [PROBE_TOKENS]


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


# ---------------------------------------------------------------------------------------- issue 15
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


async def test_sampling_extensions(engine: VLLMEngine) -> None:
    tokenizer = engine._tokenizer
    forced = tokenizer.encode(" banana", add_special_tokens=False)[0]
    biased = await _collect(engine, _request(prompt=PROBE, max_tokens=4, logit_bias={forced: 100.0}))
    assert _text(biased) == tokenizer.decode([forced]) * 4
    long = await _collect(
        engine, _request(prompt="Say hi.", max_tokens=12, ignore_eos=True, min_tokens=12, temperature=0.0)
    )
    assert long[-1].completion_tokens == 12 and long[-1].finish_reason == "length"
    top1 = await _collect(
        engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS, temperature=1.0, top_k=1, seed=5)
    )
    greedy = await _collect(engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS))
    assert _text(top1) == _text(greedy)
    rep = await _collect(
        engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS, repetition_penalty=2.0, min_p=0.05)
    )
    assert rep[-1].completion_tokens == PROBE_TOKENS
    with pytest.raises(InvalidParameterError) as info:
        await _collect(engine, _request(prompt=PROBE, logit_bias={10**8: 1.0}))
    assert info.value.param == "logit_bias"


async def test_structured_outputs_on_base_and_adapter(
    engine: VLLMEngine, references: tuple[str, Adapter]
) -> None:
    import json

    _, adapter = references
    messages = ({"role": "user", "content": "Invent a person. Answer in JSON with name and age."},)
    await engine.load_lora(adapter.spec)
    try:
        for lora in (None, adapter.spec):
            schema_req = dataclasses.replace(
                _request(messages=messages, max_tokens=60, structured=StructuredOutput(json_schema=PERSON)),
                lora=lora,
            )
            value = json.loads(_text(await _collect(engine, schema_req)))
            assert set(value) == {"name", "age"} and isinstance(value["age"], int)
            assert isinstance(value["name"], str)
            obj_req = dataclasses.replace(
                _request(
                    prompt="A JSON object:",
                    max_tokens=60,
                    ignore_eos=False,
                    structured=StructuredOutput(json_object=True),
                ),
                lora=lora,
            )
            chunks = await _collect(engine, obj_req)
            if chunks[-1].finish_reason == "stop":
                assert isinstance(json.loads(_text(chunks)), dict)
            else:
                assert _text(chunks).lstrip().startswith("{")
    finally:
        await engine.unload_lora(adapter.spec)
    bad = StructuredOutput(json_schema={"type": "objekt"}, param="tools")
    with pytest.raises(InvalidParameterError) as info:
        await _collect(engine, _request(prompt=PROBE, structured=bad))
    assert info.value.param == "tools"
    await engine.check_health()
    assert engine.num_unfinished_requests() == 0


async def test_structured_outputs_choice_regex_grammar(engine: VLLMEngine) -> None:
    import re

    messages = ({"role": "user", "content": "Is the sky green? Answer."},)
    labels = ("refund", "shipping", "other")
    for constraint, check in (
        (StructuredOutput(choice=labels, param="structured_outputs"), lambda t: t in labels),
        (
            StructuredOutput(regex="[0-9]{3}-[a-z]{2}", param="structured_outputs"),
            lambda t: re.fullmatch("[0-9]{3}-[a-z]{2}", t),
        ),
        (
            StructuredOutput(grammar='root ::= "yes" | "no"', param="structured_outputs"),
            lambda t: t in ("yes", "no"),
        ),
    ):
        chunks = await _collect(engine, _request(messages=messages, max_tokens=20, structured=constraint))
        assert chunks[-1].finish_reason == "stop" and check(_text(chunks)), (constraint, _text(chunks))
    for bad in (
        StructuredOutput(regex="[0-9", param="structured_outputs"),
        StructuredOutput(grammar="root ::= ", param="structured_outputs"),
    ):
        with pytest.raises(InvalidParameterError) as info:
            await _collect(engine, _request(prompt=PROBE, structured=bad))
        assert info.value.param == "structured_outputs"
    await engine.check_health()


async def test_token_level_extensions(engine: VLLMEngine) -> None:
    greedy = await _collect(
        engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS, ignore_eos=True, logprobs=0)
    )
    ids = [t.token_id for c in greedy for t in c.logprobs or []]
    assert len(ids) == PROBE_TOKENS
    # stop_token_ids: the greedy answer stops at (and without) the first token it had not produced before
    k = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])
    stopped = await _collect(
        engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS, ignore_eos=True, stop_token_ids=(ids[k],))
    )
    assert stopped[-1].finish_reason == "stop" and stopped[-1].extra["stop_reason"] == ids[k]
    assert _text(stopped) == engine._tokenizer.decode(ids[:k])
    # allowed_token_ids: every generated token is one of them
    allowed = (ids[0], ids[1], 13)
    only = await _collect(
        engine, _request(prompt=PROBE, max_tokens=6, ignore_eos=True, logprobs=0, allowed_token_ids=allowed)
    )
    assert {t.token_id for c in only for t in c.logprobs or []} <= set(allowed)
    # bad_words: the greedy first word is never produced
    first_word = engine._tokenizer.decode(ids[:1]).strip()
    banned = await _collect(engine, _request(prompt=PROBE, max_tokens=4, logprobs=0, bad_words=(first_word,)))
    assert banned[0].logprobs and banned[0].logprobs[0].token_id != ids[0]
    # include_stop_str_in_output: the stop string stays at the end of the answer
    text = _text(greedy)
    stop = text.strip().split()[1]
    kept = await _collect(
        engine,
        _request(
            prompt=PROBE,
            max_tokens=PROBE_TOKENS,
            ignore_eos=True,
            stop=(stop,),
            include_stop_str_in_output=True,
        ),
    )
    assert _text(kept).endswith(stop) and _text(kept) == text[: text.index(stop) + len(stop)]
    # truncate_prompt_tokens: the prompt's last (or first) tokens, counted as the engine submits them
    whole = engine._tokenizer.encode(PROBE, add_special_tokens=True)
    for side, kept_ids in (("left", whole[-3:]), ("right", whole[:3])):
        cut = dataclasses.replace(
            _request(prompt=PROBE, max_tokens=2), truncate_prompt_tokens=3, truncation_side=side
        )
        assert await engine.count_prompt_tokens(cut) == 3
        first = (await _collect(engine, cut))[0]
        assert first.prompt_tokens == 3 and first.prompt_text == engine._tokenizer.decode(kept_ids)
    # a client priority (the engine schedules by priority by default) changes order, not the answer
    urgent = dataclasses.replace(_request(prompt=PROBE, max_tokens=PROBE_TOKENS, ignore_eos=True), priority=5)
    assert _text(await _collect(engine, urgent)) == _text(greedy)
    # stream_interval: fewer, bigger deltas with the same text
    batched = await _collect(
        engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS, ignore_eos=True, stream_interval=4)
    )
    assert _text(batched) == text
    counts = [c.completion_tokens for c in batched]  # vLLM may merge deltas a slow reader has not taken
    assert counts[0] == 1 and counts[-1] == PROBE_TOKENS  # the first token at once, then >= 4 per chunk
    assert all(b - a >= 4 for a, b in zip(counts, counts[1:-1], strict=False)), counts
    for param, settings in (
        ("stop_token_ids", {"stop_token_ids": (10**8,)}),
        ("allowed_token_ids", {"allowed_token_ids": (10**8,)}),
    ):
        with pytest.raises(InvalidParameterError) as info:
            await _collect(engine, _request(prompt=PROBE, **settings))
        assert info.value.param == param


async def test_chat_template_options(engine: VLLMEngine) -> None:
    prefill = (
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "My favourite color is"},
    )
    request = dataclasses.replace(
        _request(messages=prefill, max_tokens=4), add_generation_prompt=False, continue_final_message=True
    )
    chunks = await _collect(engine, request)
    assert chunks[0].prompt_text is not None and chunks[0].prompt_text.endswith("My favourite color is")
    plain = await _collect(engine, _request(messages=prefill[:1], max_tokens=4))
    assert plain[0].prompt_text is not None and plain[0].prompt_text.rstrip().endswith("assistant")
    no_header = await _collect(
        engine, dataclasses.replace(_request(messages=prefill[:1], max_tokens=4), add_generation_prompt=False)
    )
    assert no_header[0].prompt_text is not None and not no_header[0].prompt_text.rstrip().endswith(
        "assistant"
    )
    kwargs = dataclasses.replace(
        _request(messages=prefill[:1], max_tokens=2), chat_template_kwargs={"enable_thinking": False}
    )
    assert (await _collect(engine, kwargs))[-1].finish_reason is not None


@pytest.fixture(scope="module")
def hf_prompt_logprobs(default_model_path: Path) -> list[float]:
    """transformers' log-probability of each PROBE token after the ones before it (first one excluded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    model = AutoModelForCausalLM.from_pretrained(default_model_path, dtype=torch.float32)
    ids = tokenizer(PROBE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[i - 1, ids[0, i]]) for i in range(1, ids.shape[1])]


async def test_logprobs_and_prompt_logprobs(engine: VLLMEngine, hf_prompt_logprobs: list[float]) -> None:
    chunks = await _collect(engine, _request(prompt=PROBE, max_tokens=6, logprobs=3, prompt_logprobs=1))
    generated = [t for c in chunks for t in c.logprobs or []]
    assert len(generated) == 6 and "".join(t.token for t in generated) == _text(chunks)
    for t in generated:  # greedy: the chosen token is the most likely one
        assert t.logprob is not None and t.logprob <= 0.0
        assert len(t.top) >= 3 and t.top[0][1] == pytest.approx(t.logprob, abs=1e-4)
    prompt = chunks[0].prompt_logprobs
    assert prompt is not None and chunks[0].prompt_text == PROBE
    assert prompt[0].logprob is None and len(prompt) == len(hf_prompt_logprobs) + 1
    ours = [t.logprob for t in prompt[1:]]
    assert ours == pytest.approx(hf_prompt_logprobs, abs=2e-2)
    assert "".join(t.token for t in prompt) == PROBE


async def test_token_id_prompts(engine: VLLMEngine) -> None:
    ids = tuple(engine._tokenizer.encode(PROBE, add_special_tokens=True))
    request = GenerationRequest(
        "ids-1", SamplingSettings(max_tokens=PROBE_TOKENS, temperature=0.0), prompt_token_ids=ids
    )
    by_ids = await _collect(engine, request)
    assert _text(by_ids) == _text(await _collect(engine, _request(prompt=PROBE, max_tokens=PROBE_TOKENS)))
    assert by_ids[0].prompt_text == PROBE and by_ids[0].prompt_tokens == len(ids)
    with pytest.raises(InvalidParameterError):
        await _collect(engine, dataclasses.replace(request, request_id="ids-2", prompt_token_ids=(10**7,)))
    assert not engine.supports_tools()  # SmolLM2's chat template has no tools


async def test_tool_history_renders_without_a_tools_template(engine: VLLMEngine) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }
    messages = (
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    )
    text, ids = engine._render(_request(messages=messages))
    assert '"get_weather"' in text and "sunny" in text  # SmolLM2's template would drop the call: kept as text
    chunks = await _collect(engine, _request(messages=messages, max_tokens=8))
    assert chunks[0].prompt_tokens == len(ids) and _text(chunks)


def test_auto_tool_calls_are_read_by_vllms_tool_parser(default_model_path: Path) -> None:
    """`parse_tool_calls` drives vLLM's own parser (hermes here; no engine needed, only the tokenizer)."""
    from transformers import AutoTokenizer

    engine = VLLMEngine(VLLMEngineConfig(model=str(default_model_path), tool_call_parser="hermes"))
    engine._tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    engine._tool_parser = engine._pick_tool_parser()
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    text = 'Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    content, calls = engine.parse_tool_calls(text, (tool,))
    assert content == "Let me check."
    assert calls == [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert engine.parse_tool_calls("no call here", (tool,)) == ("no call here", [])
    assert not engine.supports_tools()  # the parser alone is not enough: SmolLM2's template has no tools
