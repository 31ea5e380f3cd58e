"""Fakes for the evals unit tests: an in-process OpenAI-compatible endpoint (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

Answer = Callable[[str, list[dict[str, str]]], str]


@dataclass
class FakeOpenAI:
    """Answers /chat/completions and /completions with `answer(model, messages)`.

    `fail_statuses` are returned (in order) before normal answers; `down_after` makes every request after
    that many raise ConnectError (the server "dies"); `reject_models` get HTTP 404.
    """

    answer: Answer = lambda model, messages: "ok"
    fail_statuses: list[int] = field(default_factory=list)
    down_after: int | None = None
    reject_models: set[str] = field(default_factory=set)
    served_by: Callable[[str], str | None] = lambda model: f"{model}@v1"
    calls: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down_after is not None and len(self.calls) >= self.down_after:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        self.calls.append(body)
        self.headers_seen.append(dict(request.headers))
        if self.fail_statuses:
            status = self.fail_statuses.pop(0)
            return httpx.Response(status, json={"error": {"message": f"fake {status}", "type": "x"}})
        model = body["model"]
        if model in self.reject_models:
            return httpx.Response(
                404, json={"error": {"message": f"model {model!r} not found", "type": "NotFound"}}
            )
        if "messages" in body:
            text = self.answer(model, body["messages"])
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            text = self.answer(model, [{"role": "user", "content": body["prompt"]}])
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        headers = {}
        served = self.served_by(model)
        if served:
            headers["x-tuneloop-served-by"] = served
        payload = {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10},
        }
        return httpx.Response(200, json=payload, headers=headers)

    def transport(self) -> httpx.MockTransport:
        if self.delay_s <= 0:
            return httpx.MockTransport(self.handler)

        async def slow(request: httpx.Request) -> httpx.Response:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
                return self.handler(request)
            finally:
                self.in_flight -= 1

        return httpx.MockTransport(slow)


@pytest.fixture
def fake_openai() -> FakeOpenAI:
    return FakeOpenAI()


def last_user(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"]


def make_run(
    suite: str,
    model: str,
    scores: list[float],
    *,
    slices: list[str] | None = None,
    role: str = "target",
    margin: float = 0.05,
    metric: str = "contains_answer",
    failed: int = 0,
    ids: list[str] | None = None,
) -> Any:
    """A finished RunResult with one mean-type metric, built from per-example scores (no endpoint)."""
    from evals.results import ExampleResult, MetricValue, RunResult

    examples = []
    for i, value in enumerate(scores):
        example_id = ids[i] if ids else f"{suite}-{i}"
        result = ExampleResult(
            id=example_id,
            slice=(slices[i] if slices else None),
            prompt=f"q{i}",
            reference="r",
            fingerprint="f",
            output=f"answer {value}",
            prediction=f"answer {value}",
            served_by=f"{model}@v1",
            model=model,
            latency_ms=100.0 + i,
        )
        if i < failed:
            result.output = None
            result.error = "HTTP 503 (after 4 attempts)"
        else:
            result.metrics[metric] = MetricValue(score=value, stats=[value, 1.0])
        examples.append(result)
    run = RunResult(
        run_id=f"{suite}__{model}",
        suite=suite,
        task="chat_qa",
        model=model,
        base_url="http://fake/v1",
        k_shot=0,
        primary_metric=metric,
        metric_kinds={metric: metric},
        higher_is_better={metric: True},
        slice_column="slice" if slices else None,
        gate={"role": role, "metric": metric, "margin": margin, "min_improvement": 0.0},
        thresholds={},
        started_at="2026-01-01T00:00:00+00:00",
        complete=failed == 0,
        planned=len(scores),
        examples=examples,
    )
    return run


@pytest.fixture
def run_factory() -> Callable[..., Any]:
    return make_run


@pytest.fixture
def fake_openai_server(fake_openai: FakeOpenAI) -> Any:
    """The fake endpoint behind a real HTTP socket on 127.0.0.1 (for the CLI, which takes only a URL)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            length = int(self.headers.get("content-length", 0))
            request = httpx.Request(
                "POST", f"http://fake{self.path}", content=self.rfile.read(length), headers=dict(self.headers)
            )
            response = fake_openai.handler(request)
            body = response.content
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", fake_openai
    server.shutdown()
    server.server_close()
