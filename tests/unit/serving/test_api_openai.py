"""The OpenAI-compatible HTTP surface through the real Litestar app, on the fake engine."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from serving.api.app import RequestLimits, build_http_app
from serving.core import CoreConfig, ServingCore
from serving.engine.fake import FakeEngine


@pytest.fixture()
def client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    engine = FakeEngine("fake-base", max_model_len=64)
    core = ServingCore(engine, None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    with TestClient(build_http_app(core)) as c:
        yield c


def chat(**kw: object) -> dict[str, object]:
    body: dict[str, object] = {"model": "fake-base", "messages": [{"role": "user", "content": "hello there"}]}
    body.update(kw)
    return body


def test_chat_completion_names_what_served_it(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-base"
    assert r.headers["x-tuneloop-served-by"] == "fake-base"
    assert body["id"].startswith("chatcmpl-") and r.headers["x-request-id"] == body["id"]
    assert body["usage"]["completion_tokens"] <= 5
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_stream_chunks_concatenate_to_the_full_answer(client: TestClient) -> None:  # type: ignore[type-arg]
    full = client.post("/v1/chat/completions", json=chat(temperature=0)).json()
    r = client.post(
        "/v1/chat/completions", json=chat(temperature=0, stream=True, stream_options={"include_usage": True})
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]


def test_completions_with_several_prompts_and_n(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/completions", json={"model": "fake-base", "prompt": ["a b", "c d"], "n": 2})
    assert r.status_code == 200
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert all(c["text"] for c in choices)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[]", 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        (json.dumps(chat(messages=[])).encode(), 400, "messages"),
        (json.dumps(chat(messages=[{"role": "user", "content": "   "}])).encode(), 400, None),
        (json.dumps(chat(messages=[{"role": "wizard", "content": "x"}])).encode(), 400, "messages.0.role"),
        (json.dumps(chat(max_tokens=0)).encode(), 400, "max_tokens"),
        (json.dumps(chat(max_tokens=10**9)).encode(), 400, "max_tokens"),
        (json.dumps(chat(n=0)).encode(), 400, "n"),
        (json.dumps(chat(n=100)).encode(), 400, "n"),
        (json.dumps(chat(temperature=5)).encode(), 400, "temperature"),
        (json.dumps(chat(top_p=0)).encode(), 400, "top_p"),
        (json.dumps(chat(temperature="hot")).encode(), 400, "temperature"),
        (json.dumps(chat(messages=[{"role": "user", "content": "w " * 80}])).encode(), 400, "messages"),
        (json.dumps(chat(model="no-such-model")).encode(), 404, "model"),
        (json.dumps(chat(model="no-such@champion")).encode(), 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(
    client: TestClient, body: bytes, status: int, param: str | None
) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    # the service keeps serving afterwards
    assert client.post("/v1/chat/completions", json=chat()).status_code == 200


def test_models_lists_the_base(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/v1/models")
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["fake-base"]
    assert client.get("/v1/models/fake-base").json()["kind"] == "base"
    assert client.get("/v1/models/other").status_code == 404


def test_metrics_count_requests_and_tokens(client: TestClient) -> None:  # type: ignore[type-arg]
    client.post("/v1/chat/completions", json=chat())
    client.post("/v1/chat/completions", json=chat(model="nope"))
    text = client.get("/metrics").text
    assert re.search(
        r'tuneloop_requests_total\{endpoint="chat.completions",replica="[^"]+",served_by="fake-base",'
        r'status="200"\} 1.0',
        text,
    )
    assert "tuneloop_time_to_first_token_seconds_bucket" in text
    assert "tuneloop_completion_tokens_total" in text


def test_health_and_ready(client: TestClient) -> None:  # type: ignore[type-arg]
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_unknown_route_is_a_404_envelope(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/v2/whatever")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_body_too_large_is_413() -> None:
    engine = FakeEngine("fake-base")
    core = ServingCore(engine, None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    with TestClient(build_http_app(core, limits=RequestLimits(max_body_bytes=2048))) as c:
        r = c.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "x" * 5000}]))
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_greedy_n_above_one_answers_identical_choices(client: TestClient) -> None:  # type: ignore[type-arg]
    # issue 15: OpenAI allows n > 1 at temperature 0 (this used to be a 400)
    r = client.post("/v1/chat/completions", json=chat(n=2, temperature=0))
    assert r.status_code == 200, r.text
    first, second = (c["message"]["content"] for c in r.json()["choices"])
    assert first == second
