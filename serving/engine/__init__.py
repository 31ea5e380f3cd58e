"""Inference engines: the `Engine` protocol, the real vLLM engine and a fake for unit tests."""

from serving.engine.base import (
    Engine,
    EngineError,
    GenerationChunk,
    GenerationRequest,
    LoRASpec,
    PromptTooLongError,
    SamplingSettings,
)

__all__ = [
    "Engine",
    "EngineError",
    "GenerationChunk",
    "GenerationRequest",
    "LoRASpec",
    "PromptTooLongError",
    "SamplingSettings",
]
