"""Device selection for the inference engine: CUDA when torch sees a GPU, else CPU, and the process
environment vLLM's CPU backend reads (set only where the operator has not set it already)."""

from __future__ import annotations

import os
from typing import Literal

DeviceKind = Literal["cuda", "cpu"]

DEFAULT_CPU_KVCACHE_SPACE_GIB = 2
"""KV-cache size on CPU when neither the engine config nor `VLLM_CPU_KVCACHE_SPACE` names one."""

DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS = 128
"""Tokens one engine step may process on CPU (vLLM's chunked-prefill budget; its own default is 2048).
On CPU a step's time grows with its tokens, and vLLM answers control calls (adapter loads) only between
steps: with 2048, a burst of 32 prompts made one ~17 s step that an adapter load had to wait for. Measured
with `benchmarks/serving_hotswap.py` (32 streams on one LoRA, 30 s, 3 swaps + rollback, 2 cores; one run
each): budget 2048 / 512 / 256 / 128 gave steady 64 / 75 / 89 / 86 tokens/s, TTFT p50 15.4 / 5.9 / 4.1 /
4.5 s and a slowest swap of 18.5 / 10.1 / 7.3 / 2.3 s (2048 and 256 with a 4-token smoke test, 512 and 128
with today's 1-token one). Bare vLLM at 2048 vs 128 in one run (`benchmarks/engine_step_budget.py`,
32 clients; two runs on two machines): base model 181 vs 185 and 178 vs 177 tokens/s (TTFT p50 2.3 vs 0.7
and 2.7 vs 0.8 s), LoRA 74 vs 94 and 59 vs 90 tokens/s (TTFT p50 13.8 vs 1.6 and 18.7 vs 1.9 s). The cost
is a long prompt alone: 1,692 tokens on an idle engine take 14 steps, TTFT 2.5 vs 2.9 s on the base model
(on a LoRA 15.7 vs 7.8 s: the CPU LoRA kernels are slower on one big chunk than on 14 small ones)."""


def detect_device() -> DeviceKind:
    """ "cuda" when torch can use a CUDA GPU in this process, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_env_defaults(kvcache_space_gib: int | None = None) -> dict[str, str]:
    """The environment vLLM's CPU backend needs, for the variables not already set in `os.environ`.

    `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache; vLLM reads it in the engine process and it overrides the
    `kv_cache_memory_bytes` engine argument) and `VLLM_CPU_NUM_OF_RESERVED_CPU=0` (vLLM otherwise keeps
    one core away from the model, half of a 2-core machine).
    """
    wanted = {
        "VLLM_CPU_KVCACHE_SPACE": str(kvcache_space_gib or DEFAULT_CPU_KVCACHE_SPACE_GIB),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    return {key: value for key, value in wanted.items() if not os.environ.get(key)}


def apply_cpu_env_defaults(kvcache_space_gib: int | None = None) -> dict[str, str]:
    """Set `cpu_env_defaults()` in `os.environ` (before the engine starts) and return what was set."""
    missing = cpu_env_defaults(kvcache_space_gib)
    os.environ.update(missing)
    return missing
