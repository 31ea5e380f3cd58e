"""One exception -> status/envelope mapping (`serving.api.errors.api_error`), the same on every path:
the Litestar handler, a non-streamed completion and a streamed one (where the error is the last event)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.exc import OperationalError

from serving.api.app import build_http_app
from serving.api.errors import api_error
from serving.core import CoreConfig, ServingCore
from serving.engine.base import (
    EngineError,
    GenerationChunk,
    GenerationRequest,
    InvalidParameterError,
    PromptTooLongError,
)
from serving.engine.fake import FakeEngine
from serving.errors import BadRequestError, InternalServerError
from serving.registry.errors import ConflictError, RegistryError, RequestNotFoundError, StorageFullError

ENGINE_FAILURES: list[tuple[Exception, int, str | None, str | None]] = [
    (PromptTooLongError(60, 10, 64), 400, "context_length_exceeded", "<prompt>"),
    (InvalidParameterError("schema too deep", "response_format"), 400, "invalid_value", "response_format"),
    (ValueError("bad seed"), 400, "invalid_value", None),
    (EngineError("the engine died"), 500, None, None),
    (RuntimeError("a bug"), 500, None, None),
]


@pytest.fixture()
def failing() -> Iterator[tuple[TestClient, FakeEngine]]:  # type: ignore[type-arg]
    engine = FakeEngine("fake-base", max_model_len=64)
    core = ServingCore(engine, None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    with TestClient(build_http_app(core)) as c:
        yield c, engine


def _raising(exc: Exception) -> Any:
    async def generate(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise exc
        yield  # pragma: no cover - makes this an async generator

    return generate


def _last_event(text: str) -> dict[str, Any]:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return json.loads(events[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("exc", "status", "code", "param"), ENGINE_FAILURES)
@pytest.mark.parametrize(
    ("path", "body", "prompt_param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ("/v1/completions", {"prompt": "hi"}, "prompt"),
    ],
)
def test_stream_and_non_stream_answer_an_engine_failure_alike(
    failing: tuple[TestClient, FakeEngine],  # type: ignore[type-arg]
    exc: Exception,
    status: int,
    code: str | None,
    param: str | None,
    path: str,
    body: dict[str, Any],
    prompt_param: str,
) -> None:
    client, engine = failing
    engine.generate = _raising(exc)  # type: ignore[method-assign]
    request = {"model": "fake-base", "max_tokens": 4, **body}
    plain = client.post(path, json=request)
    streamed = client.post(path, json={**request, "stream": True})
    assert plain.status_code == status
    assert streamed.status_code == 200  # the headers went out before the engine failed
    error = plain.json()["error"]
    assert _last_event(streamed.text) == {"error": error}
    assert error["code"] == code
    assert error["param"] == (prompt_param if param == "<prompt>" else param)
    assert error["type"] == ("invalid_request_error" if status == 400 else "server_error")
    if isinstance(exc, RuntimeError):  # a bug's text is not shown to the client
        assert "a bug" not in error["message"]


def test_the_table() -> None:
    assert api_error(BadRequestError("x")).status_code == 400
    assert api_error(ValueError("x")).status_code == 500  # outside a completion a ValueError is a bug
    assert api_error(ValueError("x"), prompt_param="prompt").status_code == 400
    missing = api_error(RequestNotFoundError("no such request", param="request_id"))
    assert (missing.status_code, missing.code, missing.param) == (404, "request_not_found", None)
    conflict = api_error(ConflictError("in use"))
    assert (conflict.status_code, conflict.error_type) == (409, "conflict_error")
    full = api_error(StorageFullError("disk full"))
    assert (full.status_code, full.message) == (507, "disk full")
    hidden = api_error(RegistryError("secret detail"))  # a 500 whose message is not shown
    assert isinstance(hidden, InternalServerError) and hidden.message == "Internal server error."
    db = api_error(OperationalError("select 1", {}, Exception("connection refused")))
    assert (db.status_code, db.code, db.headers) == (503, "database_unavailable", {"retry-after": "5"})
