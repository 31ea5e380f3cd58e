"""Endpoint for the evals integration tests: the real tuneloop service (lead's `openai_base_url` fixture).

`TUNELOOP_EVALS_BASE_URL` (+ `TUNELOOP_EVALS_MODEL`) points the same tests at any other OpenAI-compatible
server instead, e.g. a bare vLLM server, without starting tuneloop.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def eval_endpoint(request: pytest.FixtureRequest) -> tuple[str, str, bool]:
    """(base_url, model name, is it tuneloop's own endpoint)."""
    override = os.environ.get("TUNELOOP_EVALS_BASE_URL")
    model = os.environ.get("TUNELOOP_EVALS_MODEL", DEFAULT_MODEL)
    if override:
        return override, model, False
    return str(request.getfixturevalue("openai_base_url")), model, True
