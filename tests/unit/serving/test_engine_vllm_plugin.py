"""serving.engine.vllm_plugin: while vLLM computes one request's prompt logits, the LoRA logits processor
reads that request's slice of the per-token mapping; the per-request mapping is restored afterwards, and
anything that is not a slice of the step's rows goes through unchanged. The real engine path (several
echo requests in one step, base and adapter) is tested in tests/integration/serving/test_serve_e2e.py."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
import torch

from serving.engine.vllm_plugin import per_token_lora_mapping, register


class Punica:
    """The parts of vLLM's PunicaWrapperBase the fix touches: a step of 3 requests, 7 tokens."""

    def __init__(self) -> None:
        self.token_lora_indices = torch.tensor([0, 0, 0, -1, -1, 1, 1])
        self._sampler_indices = torch.tensor([0, -1, 1, 9, 9, 9, 9, 9])
        self.indices_len = [7, 3, 3, 7]

    @property
    def sampler_indices(self) -> torch.Tensor:
        return self._sampler_indices[: self.indices_len[1]]


class Model:
    def __init__(self, punica: Punica) -> None:
        self.punica = punica
        self.seen: list[list[int]] = []

    def compute_logits(self, rows: torch.Tensor) -> torch.Tensor:
        mapping = self.punica.sampler_indices
        assert mapping.shape[0] in (1, rows.shape[0]), "vLLM's einsum would fail here"
        self.seen.append(mapping.tolist())
        return rows


def test_each_request_s_prompt_rows_read_their_own_tokens_mapping() -> None:
    punica, hidden = Punica(), torch.randn(7, 4)
    model = Model(punica)
    with pytest.raises(AssertionError):  # what vLLM does without the fix: 3 request rows, 2 prompt rows
        model.compute_logits(hidden[3:5])
    with per_token_lora_mapping(model, hidden, punica):
        model.compute_logits(hidden[0:3])  # request 1: adapter 0
        model.compute_logits(hidden[3:5])  # request 2: the base (-1)
        model.compute_logits(hidden[5:7])  # request 3: adapter 1
        assert punica.sampler_indices.tolist() == [0, -1, 1]  # restored between calls
        model.compute_logits(torch.randn(3, 4))  # not a slice of the step: unchanged mapping
    assert model.seen == [[0, 0, 0], [-1, -1], [1, 1], [0, -1, 1]]
    assert "compute_logits" not in vars(model)  # the class's method again
    assert punica.indices_len == [7, 3, 3, 7] and punica._sampler_indices[3:].tolist() == [9] * 5


def test_the_mapping_is_restored_when_vllm_raises() -> None:
    punica, hidden = Punica(), torch.randn(7, 4)
    model = Model(punica)
    model.punica = None  # type: ignore[assignment]
    with pytest.raises(AttributeError), per_token_lora_mapping(model, hidden, punica):
        model.compute_logits(hidden[5:7])
    assert punica.sampler_indices.tolist() == [0, -1, 1] and "compute_logits" not in vars(model)


def test_vllm_finds_the_plugin_and_registering_twice_patches_once() -> None:
    names = {e.value for e in entry_points(group="vllm.general_plugins")}
    assert "serving.engine.vllm_plugin:register" in names
    runner: Any = pytest.importorskip("vllm.v1.worker.gpu_model_runner").GPUModelRunner
    register()
    patched = runner._get_prompt_logprobs_dict
    register()
    assert runner._get_prompt_logprobs_dict is patched
    assert getattr(patched, "_tuneloop_prompt_logprobs_lora", False)
    cpu = pytest.importorskip("vllm.lora.punica_wrapper.punica_cpu")
    ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")
    assert cpu.bgmv_shrink is ops.bgmv_shrink and hasattr(ops.bgmv_shrink, "__wrapped__")
    assert not hasattr(ops.bgmv_shrink.__wrapped__, "__wrapped__")  # wrapped once


def test_cpu_generators_are_rewound_by_state_and_hidden_from_vllm_s_offset_rewind() -> None:
    from serving.engine.vllm_plugin import rewind_cpu_generators

    gen, other = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    generators = {0: gen, 2: other}
    states = {0: (gen, gen.get_state())}
    first = torch.rand(4, generator=gen)  # the step's sample, which vLLM discards
    with rewind_cpu_generators(generators, states):
        assert list(generators) == [2]  # what vLLM's `set_offset` loop sees
    assert generators[0] is gen and generators[2] is other
    assert torch.equal(torch.rand(4, generator=gen), first)  # as if the discarded sample never happened
    with pytest.raises(RuntimeError, match="offset"):  # why: CPU generators have no offset to rewind
        gen.set_offset(gen.get_offset() - 4)


def test_tokens_without_an_adapter_get_no_delta_from_the_last_lora_slot() -> None:
    ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")
    from serving.engine.vllm_plugin import bgmv_shrink_without_base_rows

    vllm_shrink = getattr(ops.bgmv_shrink, "__wrapped__", ops.bgmv_shrink)  # vLLM's, even once patched
    torch.manual_seed(0)
    lora_a = torch.randn(4, 1, 2, 8)  # 4 slots, rank 2, hidden 8: every slot holds an adapter
    x = torch.randn(3, 8)
    indices = torch.tensor([-1, 0, 3])  # a base token, then tokens of the adapters in slots 0 and 3
    unpatched = torch.zeros(3, 2)
    vllm_shrink(x, lora_a, unpatched, indices, 1.0)
    assert torch.allclose(unpatched[0], x[0] @ lora_a[3, 0].T)  # vLLM's CPU op: -1 is the last slot
    fixed = torch.zeros(3, 2)
    bgmv_shrink_without_base_rows(vllm_shrink)(x, lora_a, fixed, indices, 1.0)
    assert torch.equal(fixed[0], torch.zeros(2))  # nothing for the base token to expand
    assert torch.equal(fixed[1:], unpatched[1:])  # the adapters' tokens as before
