"""Fakes for the evals unit tests: an in-process OpenAI-compatible endpoint (httpx MockTransport)."""

from __future__ import annotations

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
            return httpx.Response(404, json={"error": {"message": f"model {model!r} not found", "type": "NotFound"}})
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
        return httpx.MockTransport(self.handler)


@pytest.fixture
def fake_openai() -> FakeOpenAI:
    return FakeOpenAI()


def last_user(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"]
