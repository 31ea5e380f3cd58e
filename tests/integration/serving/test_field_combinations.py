"""The real engine under concurrent requests that combine the OpenAI and vLLM fields at random, on the base
and on an adapter (its alias and its version): log-probabilities, echo, prompt log-probabilities, `n`,
streaming, structured outputs (`response_format` and vLLM's `structured_outputs`), tools, seeds, vLLM's
sampling and detokenization extensions, batched and token-id prompts, prompts
longer than the engine's step budget. A combination vLLM cannot serve is a 400 naming its field; none is a
5xx, and the engine still serves afterwards. (This is how the two engine crashes that
serving/engine/vllm_plugin.py fixes were found; the fake-engine fuzz in tests/reliability cannot see them.)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

REQUESTS, CONCURRENCY = 120, 16
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
EXTENSIONS: tuple[tuple[str, Any], ...] = (
    ("seed", 3),
    ("top_k", 5),
    ("min_p", 0.1),
    ("repetition_penalty", 1.2),
    ("logit_bias", {"42": 5}),
    ("stop", ["."]),
    ("presence_penalty", 0.5),
    ("frequency_penalty", 0.5),
    ("min_tokens", 2),
    ("ignore_eos", True),
    ("top_p", 0.9),
    ("stop_token_ids", [198]),
    ("include_stop_str_in_output", True),
    ("stream_interval", 3),
    ("bad_words", ["the"]),
    ("skip_special_tokens", False),
    ("allowed_token_ids", [198, 253, 314, 330, 1147, 28]),
    ("priority", 3),
    ("truncate_prompt_tokens", 24),
)
LONG = "The river runs to the sea and the sea is wide. " * 25  # more tokens than one step's budget


def chat_body(rng: random.Random, model: str) -> tuple[str, dict[str, Any]]:
    content = rng.choice(["Hi", "What is the capital of France?", LONG])
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": rng.choice([1, 4, 16]),
        "temperature": rng.choice([0, 0.8]),
    }
    if rng.random() < 0.4:
        body |= {"logprobs": True, "top_logprobs": rng.choice([0, 1, 5])}
    if rng.random() < 0.3:
        body["n"] = rng.choice([2, 3])
    if rng.random() < 0.4:
        body["stream"] = True
    shape = rng.random()
    if shape < 0.15:
        body["response_format"] = {"type": "json_object"}
    elif shape < 0.3:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
        }
    elif shape < 0.36:
        body["structured_outputs"] = rng.choice(
            [{"choice": ["yes", "no", "maybe"]}, {"regex": "[0-9]{2,4}"}, {"grammar": 'root ::= "a" | "bc"'}]
        )
    elif shape < 0.45:
        body["tools"] = [TOOL]
        body["tool_choice"] = rng.choice(
            ["required", "none", {"type": "function", "function": {"name": "get_weather"}}]
        )
    body |= {k: v for k, v in EXTENSIONS if rng.random() < 0.12}
    return "/chat/completions", body


def completion_body(rng: random.Random, model: str) -> tuple[str, dict[str, Any]]:
    prompt = rng.choice(["The capital of France is", ["a b c", "one two three four"], [1, 2, 3, 4, 5], LONG])
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": rng.choice([0, 1, 4, 16]),
        "temperature": rng.choice([0, 0.8]),
    }
    if rng.random() < 0.5 or body["max_tokens"] == 0:
        body["echo"] = True
    if rng.random() < 0.5:
        body["logprobs"] = rng.choice([0, 1, 5])
    if rng.random() < 0.3:
        body["n"] = rng.choice([2, 3])
    if rng.random() < 0.3 and not body.get("echo"):
        body["stream"] = True
    if rng.random() < 0.15:
        body["response_format"] = {"type": "json_object"}
    body |= {k: v for k, v in EXTENSIONS[:6] if rng.random() < 0.1}
    return "/completions", body


def test_random_field_combinations_never_break_the_engine(
    tuneloop_service: Any, champion_adapter: Callable[[str, int], str]
) -> None:
    svc = tuneloop_service
    models = [svc.base_id, "combo@champion", f"combo@{champion_adapter('combo', 5)[:12]}"]
    rng = random.Random(20261205)
    bodies = [
        (chat_body if rng.random() < 0.5 else completion_body)(rng, rng.choice(models))
        for _ in range(REQUESTS)
    ]

    def send(case: tuple[str, dict[str, Any]]) -> tuple[int, str, dict[str, Any]]:
        path, body = case
        resp = httpx.post(f"{svc.v1}{path}", json=body, timeout=300)
        return resp.status_code, resp.text, body

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(send, bodies))
    server_errors = [(code, text[:300], body) for code, text, body in answers if code >= 500]
    assert not server_errors, server_errors[:3]
    refused = [(text, body) for code, text, body in answers if code != 200]
    for text, body in refused:  # a client error names what is wrong with the request
        assert httpx.Response(400, text=text).json()["error"]["param"], (text, body)
    assert len(refused) < REQUESTS // 4, refused[:5]  # the combinations are mostly valid ones
    again = httpx.post(
        f"{svc.v1}/chat/completions",
        json={"model": models[1], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=120,
    )
    assert again.status_code == 200, again.text
