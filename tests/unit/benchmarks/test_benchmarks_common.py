"""The benchmark client's request path (`benchmarks.common.stream_chat`) and the many-adapters benchmark's
metric reading, against an in-process HTTP handler (no server)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from benchmarks.common import stream_chat
from benchmarks.engine_step_budget import long_prompt
from benchmarks.serving_many_adapters import metric, scrape_replicas

VERSION = "support@3f2a9c1d0b7e"


def sse_handler(seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A chat endpoint that streams one content delta, the usage and `[DONE]`, recording each request."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        events = [
            {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"completion_tokens": 1}},
        ]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"x-tuneloop-served-by": VERSION})

    return handle


async def test_stream_chat_names_a_version_in_the_routing_header_and_nothing_else() -> None:
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(sse_handler(seen))) as client:
        versioned = await stream_chat(client, "http://t", f"support@{'3f2a9c1d0b7e' * 2}", max_tokens=1)
        alias = await stream_chat(client, "http://t", "support@champion", max_tokens=1)
        unrouted = await stream_chat(client, "http://t", VERSION, max_tokens=1, route=False)
    assert versioned.ok and alias.ok and unrouted.ok
    assert versioned.served_by == VERSION and versioned.completion_tokens == 1
    headers = [r.headers.get("serve_multiplexed_model_id") for r in seen]
    assert headers == [VERSION, None, None]  # the 12-hex canonical id; an alias or route=False: none


async def test_scrape_replicas_merges_every_replicas_metrics() -> None:
    """The proxy answers each scrape from one replica: scraping goes on until each was seen once."""
    answers = iter(["a", "a", "b", "a"])

    def handle(request: httpx.Request) -> httpx.Response:
        replica = next(answers)
        hits = {"a": 3, "b": 5}[replica]
        return httpx.Response(
            200,
            text=(
                f'tuneloop_loaded_adapters{{replica="{replica}"}} 2.0\n'
                f'tuneloop_adapter_lookups_total{{replica="{replica}",result="hit"}} {hits}.0\n'
            ),
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        merged = await scrape_replicas(client, "http://t", 2)
    assert metric(merged, "tuneloop_adapter_lookups_total", result="hit") == 8.0
    assert metric(merged, "tuneloop_loaded_adapters") == 4.0
    assert next(answers) == "a"  # it stopped once both replicas were seen


async def test_scrape_replicas_says_when_a_replica_never_answers() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text='tuneloop_loaded_adapters{replica="a"} 1.0\n')

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(RuntimeError, match="1 of 2 replicas"):
            await scrape_replicas(client, "http://t", 2)


def test_long_prompts_differ_from_their_first_token() -> None:
    """Each long prompt opens with its own number, so vLLM's prefix cache cannot serve one from another."""
    a, b = long_prompt(1), long_prompt(2)
    assert a != b and a[:12] != b[:12]
    assert len(a.split()) > 1000  # about 1,500 tokens
