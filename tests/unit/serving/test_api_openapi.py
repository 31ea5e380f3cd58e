"""The OpenAPI document comes from the routes' types, and the answers are what the types say.

* every JSON-body route documents its request model (the model's own JSON schema: unknown fields
  refused, patterns kept) and every typed route its response model and the OpenAI error envelope;
* real answers (through the app on the fake engine) validate against the response models, round-trip
  through them unchanged, and validate against the served document's schemas; streamed events are
  their chunk models, round-tripped unchanged too;
* every admin route documents its answer's model, property by property, and its real answers (over a
  registry on SQLite) are the registry's JSON views byte for byte, as they were before they were typed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.serialization import encode_json
from litestar.testing import TestClient
from pydantic import BaseModel

from serving.api import admin_models
from serving.api.admin import AliasBody, ExperimentBody, RegisterBody, RollbackBody
from serving.api.admin_models import (
    AdapterHistory,
    AdapterRegistered,
    AdapterVersionList,
    ExperimentList,
    ExperimentView,
    ReplicaStatusList,
    SwapResultView,
    VersionRemoved,
)
from serving.api.app import Admin, build_http_app
from serving.api.openai import Healthy, Readiness
from serving.core import CoreConfig, ServingCore
from serving.engine.fake import FakeEngine
from serving.hotswap import SwapResult
from serving.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
)
from serving.registry import AdapterRegistry

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

ADMIN = "admin-token-0123456789"
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatCompletionRequest,
    ("/v1/completions", "post"): CompletionRequest,
    ("/v1/feedback", "post"): FeedbackRequest,
    ("/admin/adapters", "post"): RegisterBody,
    ("/admin/adapters/{name}/aliases/{alias}", "put"): AliasBody,
    ("/admin/adapters/{name}/rollback", "post"): RollbackBody,
    ("/admin/experiments", "post"): ExperimentBody,
}
ANSWERS: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatCompletionResponse,
    ("/v1/completions", "post"): CompletionResponse,
    ("/v1/models", "get"): ModelList,
    ("/v1/models/{model_id}", "get"): ModelCard,
    ("/v1/feedback", "post"): FeedbackResponse,
    ("/health", "get"): Healthy,
    ("/ready", "get"): Readiness,
}
ADMIN_ANSWERS: dict[tuple[str, str], tuple[int, type[BaseModel]]] = {
    ("/admin/adapters", "get"): (200, AdapterVersionList),
    ("/admin/adapters", "post"): (201, AdapterRegistered),
    ("/admin/adapters/{name}", "get"): (200, AdapterHistory),
    ("/admin/adapters/{name}/aliases/{alias}", "put"): (200, SwapResultView),
    ("/admin/adapters/{name}/rollback", "post"): (200, SwapResultView),
    ("/admin/adapters/{name}/versions/{version}", "delete"): (200, VersionRemoved),
    ("/admin/experiments", "get"): (200, ExperimentList),
    ("/admin/experiments", "post"): (201, ExperimentView),
    ("/admin/experiments/{name}/stop", "post"): (200, ExperimentView),
    ("/admin/replicas", "get"): (200, ReplicaStatusList),
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class _Sink:
    def record_feedback(self, request_id: str, **kwargs: Any) -> None:
        pass


class _NoRegistry:
    def list(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    core = ServingCore(FakeEngine("fake-base", max_model_len=256), None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    admin = Admin(_NoRegistry(), ADMIN, import_roots=(), swap_timeout_s=1)  # type: ignore[arg-type]
    with TestClient(build_http_app(core, feedback=_Sink(), admin=admin)) as c:
        yield c


@pytest.fixture(scope="module")
def doc(client: TestClient) -> dict[str, Any]:  # type: ignore[type-arg]
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                yield path, method, op


def _ref_name(schema: dict[str, Any]) -> str:
    ref = schema["$ref"]
    assert ref.startswith("#/components/schemas/")
    return str(ref.rsplit("/", 1)[1])


def test_every_json_body_is_documented_by_its_model(doc: dict[str, Any]) -> None:
    with_body = {(path, method) for path, method, op in _operations(doc) if "requestBody" in op}
    assert with_body == set(BODIES)
    schemas = doc["components"]["schemas"]
    for key, model in BODIES.items():
        op = doc["paths"][key[0]][key[1]]
        assert op["requestBody"]["required"] is True
        name = _ref_name(op["requestBody"]["content"]["application/json"]["schema"])
        assert name == model.__name__
        own = model.model_json_schema(ref_template="#/components/schemas/{model}")
        own.pop("$defs", None)
        assert schemas[name] == own  # the validator's own schema, not a lossy re-derivation
        assert schemas[name]["additionalProperties"] is False


def test_nested_request_models_keep_what_the_validator_enforces(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["JsonSchemaSpec"]["properties"]["name"]["pattern"] == "^[A-Za-z0-9_-]+$"
    assert schemas["UserMessage"]["additionalProperties"] is False
    assert set(ChatCompletionRequest.model_json_schema()["required"]) <= set(
        schemas["ChatCompletionRequest"]["required"]
    )


def test_typed_answers_and_errors_are_documented(doc: dict[str, Any]) -> None:
    for (path, method), model in ANSWERS.items():
        responses = doc["paths"][path][method]["responses"]
        assert _ref_name(responses["200"]["content"]["application/json"]["schema"]) == model.__name__
    for path, method, op in _operations(doc):
        if path.startswith(("/v1/", "/admin/")):
            assert op["security"] == [{"bearer": []}], (path, method)
        typed = (path, method) in BODIES or (path, method) in ANSWERS or (path, method) in ADMIN_ANSWERS
        if typed and path.startswith(("/v1/", "/admin/")):
            for status in ("400", "401", "404", "429", "503"):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert _ref_name(schema) == "ErrorResponse", (path, method, status)
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    names = set(doc["components"]["schemas"])

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = set(walk(doc))
    assert refs and {r.rsplit("/", 1)[1] for r in refs} <= names


def _validator(doc: dict[str, Any], name: str) -> Any:
    resource = referencing.Resource.from_contents(
        doc, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource("urn:doc", resource)
    return jsonschema.Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


def _chat(**kw: Any) -> dict[str, Any]:
    return {
        "model": "fake-base",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8,
        **kw,
    }


CASES: list[tuple[str, str, dict[str, Any] | None, type[BaseModel]]] = [
    ("post", "/v1/chat/completions", _chat(), ChatCompletionResponse),
    ("post", "/v1/chat/completions", _chat(n=2, logprobs=True, top_logprobs=2), ChatCompletionResponse),
    (
        "post",
        "/v1/chat/completions",
        _chat(tools=[TOOL], tool_choice="required", max_tokens=200),
        ChatCompletionResponse,
    ),
    (
        "post",
        "/v1/completions",
        {"model": "fake-base", "prompt": ["a b", "c"], "max_tokens": 4},
        CompletionResponse,
    ),
    (
        "post",
        "/v1/completions",
        {"model": "fake-base", "prompt": "one two", "echo": True, "logprobs": 1, "max_tokens": 0},
        CompletionResponse,
    ),
    ("get", "/v1/models", None, ModelList),
    ("get", "/v1/models/fake-base", None, ModelCard),
    ("post", "/v1/feedback", {"id": "chatcmpl-0123", "thumbs": 1}, FeedbackResponse),
    ("get", "/health", None, Healthy),
    ("get", "/ready", None, Readiness),
    ("post", "/v1/chat/completions", {"model": "fake-base", "messages": [], "x": 1}, ErrorResponse),
    ("get", "/v1/models/nope", None, ErrorResponse),
    ("post", "/v1/feedback", None, ErrorResponse),
]


@pytest.mark.parametrize(("method", "path", "body", "model"), CASES)
def test_answers_are_their_models(
    client: TestClient,  # type: ignore[type-arg]
    doc: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    model: type[BaseModel],
) -> None:
    r = client.request(method.upper(), path, json=body)
    assert (r.status_code < 300) == (model is not ErrorResponse), r.text
    data = r.json()
    assert model.model_validate(data).model_dump(mode="json") == data  # nothing lost, nothing added
    _validator(doc, model.__name__).validate(data)


def test_tool_calls_key_only_when_there_are_calls(client: TestClient) -> None:  # type: ignore[type-arg]
    plain = client.post("/v1/chat/completions", json=_chat()).json()["choices"][0]["message"]
    assert set(plain) == {"role", "content"}
    called = client.post(
        "/v1/chat/completions", json=_chat(tools=[TOOL], tool_choice="required", max_tokens=200)
    ).json()["choices"][0]["message"]
    assert set(called) == {"role", "content", "tool_calls"} and called["content"] is None


STREAMS: list[tuple[str, dict[str, Any], type[BaseModel]]] = [
    ("/v1/chat/completions", _chat(stream_options={"include_usage": True}), ChatCompletionChunk),
    ("/v1/chat/completions", _chat(n=2, logprobs=True, top_logprobs=1), ChatCompletionChunk),
    (
        "/v1/chat/completions",
        _chat(tools=[TOOL], tool_choice="required", max_tokens=200),
        ChatCompletionChunk,
    ),
    (
        "/v1/chat/completions",
        _chat(
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=200,
        ),
        ChatCompletionChunk,
    ),
    (
        "/v1/completions",
        {"model": "fake-base", "prompt": "one two", "echo": True, "logprobs": 1, "max_tokens": 4},
        CompletionChunk,
    ),
    (
        "/v1/completions",
        {"model": "fake-base", "prompt": "x", "stream_options": {"include_usage": True}},
        CompletionChunk,
    ),
]


@pytest.mark.parametrize(("path", "body", "model"), STREAMS)
def test_streamed_events_are_their_chunk_models(
    client: TestClient,  # type: ignore[type-arg]
    path: str,
    body: dict[str, Any],
    model: type[BaseModel],
) -> None:
    r = client.post(path, json={**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        data = json.loads(event)
        assert model.model_validate(data).model_dump(mode="json") == data  # same keys, same values
    usage = [json.loads(e) for e in events[:-1] if "usage" in json.loads(e)]
    assert len(usage) == (1 if body.get("stream_options") else 0)
    assert all(u["choices"] == [] for u in usage)


def test_every_admin_answer_is_documented_by_its_model(doc: dict[str, Any]) -> None:
    admin_ops = {(path, method) for path, method, _ in _operations(doc) if path.startswith("/admin/")}
    assert admin_ops == set(ADMIN_ANSWERS)
    for (path, method), (status, model) in ADMIN_ANSWERS.items():
        answer = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
        assert _ref_name(answer["schema"]) == model.__name__, (path, method)
    schemas = doc["components"]["schemas"]
    for name in admin_models.__all__:
        model = getattr(admin_models, name)
        schema = schemas[name]
        assert schema["type"] == "object"
        assert list(schema["properties"]) == list(model.model_fields), name  # every key, in wire order
        required = {f for f, info in model.model_fields.items() if info.is_required()}
        assert set(schema.get("required", [])) == required, name
        for field, prop in schema["properties"].items():
            assert {"type", "$ref", "oneOf"} & set(prop), (name, field)  # not an empty (any) schema
    version = schemas["AdapterVersionView"]["properties"]
    assert version["status"]["enum"] == ["active", "retired", "rejected"]
    assert version["created_at"] == {"type": "string", "format": "date-time"}
    assert schemas["ExperimentView"]["properties"]["arms"]["items"] == {
        "$ref": "#/components/schemas/ExperimentArmView"
    }
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):  # vLLM's answers: text, vLLM's errors
        responses = doc["paths"][path]["post"]["responses"]
        assert responses["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
        for status in ("400", "401", "404", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert _ref_name(schema) == "VLLMErrorResponse", (path, status)


@pytest.fixture
def admin_client(registry: AdapterRegistry, tmp_path: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """The app over a real registry (SQLite), adapters importable from `tmp_path`; no replica is live, so
    a hot-swap moves the alias at once."""
    core = ServingCore(FakeEngine("fake-base", max_model_len=256), None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    admin = Admin(registry, ADMIN, import_roots=(tmp_path,), swap_timeout_s=5)
    app = build_http_app(core, admin=admin)
    with TestClient(app) as c:
        c.headers["authorization"] = f"Bearer {ADMIN}"
        yield c


def test_admin_answers_are_the_registry_views_typed(
    admin_client: TestClient,  # type: ignore[type-arg]
    doc: dict[str, Any],
    registry: AdapterRegistry,
    new_adapter: Callable[..., Path],
) -> None:
    seen: set[tuple[str, str]] = set()

    def answer(
        route: str, url: str, body: dict[str, Any] | None = None, *, view: Callable[[], Any] | None = None
    ) -> Any:
        """The answer of `url` (route `route` = "METHOD /template"): its status and model are the
        documented ones; with `view`, its bytes are the registry's view, read after the call, encoded."""
        method, template = route.split(" ")
        status, model = ADMIN_ANSWERS[template, method.lower()]
        r = admin_client.request(method, url, json=body)
        assert r.status_code == status, r.text
        data = r.json()
        assert model.model_validate(data).model_dump(mode="json") == data  # nothing lost, nothing added
        _validator(doc, model.__name__).validate(data)
        if view is not None:
            assert r.content == encode_json(view())  # the bytes the untyped handler sent
        seen.add((template, method.lower()))
        return data

    swap_keys = list(SwapResult("n", "a", None, "v", (), 0.0, 0.0).to_dict())
    first = answer(
        "POST /admin/adapters",
        "/admin/adapters",
        {"path": str(new_adapter(1)), "name": "support", "alias": "champion"},
    )
    v1 = registry.get("support", first["adapter"]["version"])
    assert first["adapter"] == {**v1.to_dict(), "aliases": []}  # as registered, before the alias moved
    assert list(first["swap"]) == swap_keys and first["swap"]["to_version"] == v1.version
    second = answer(
        "POST /admin/adapters",
        "/admin/adapters",
        {"path": str(new_adapter(2)), "name": "support", "parent": v1.ref, "metadata": {"note": "x"}},
    )
    assert list(second) == ["adapter"]  # no alias asked for: no `swap` key (not a null one)
    v2 = registry.get("support", second["adapter"]["version"])
    assert encode_json(second["adapter"]) == encode_json(v2.to_dict())
    moved = answer(
        "PUT /admin/adapters/{name}/aliases/{alias}",
        "/admin/adapters/support/aliases/champion",
        {"version": v2.version[:10], "reason": "better"},
    )
    assert list(moved) == swap_keys
    assert (moved["from_version"], moved["to_version"]) == (v1.version, v2.version)
    back = answer("POST /admin/adapters/{name}/rollback", "/admin/adapters/support/rollback", {})
    assert list(back) == swap_keys and back["to_version"] == v1.version
    third = answer(
        "POST /admin/adapters", "/admin/adapters", {"path": str(new_adapter(3)), "name": "support"}
    )
    v3 = registry.get("support", third["adapter"]["version"])
    answer(  # the version as retired
        "DELETE /admin/adapters/{name}/versions/{version}",
        f"/admin/adapters/support/versions/{v3.version[:8]}",
        view=lambda: {"removed": registry.get("support", v3.version).to_dict()},
    )
    answer(
        "GET /admin/adapters",
        "/admin/adapters?all=true",
        view=lambda: {"object": "list", "data": [v.to_dict() for v in registry.list(include_retired=True)]},
    )
    assert {e.kind for e in registry.alias_history("support")} == {"set", "rollback"}
    answer(
        "GET /admin/adapters/{name}",
        "/admin/adapters/support",
        view=lambda: {
            "name": "support",
            "versions": [v.to_dict() for v in registry.list("support", include_retired=True)],
            "alias_history": [e.to_dict() for e in registry.alias_history("support")],
        },
    )
    body = {
        "name": "exp1",
        "arms": [{"model": "support@champion", "weight": 0.7}, {"model": "local-folder", "weight": 0.3}],
        "shadow": f"support@{v2.version[:8]}",
    }

    def exp1() -> dict[str, Any]:
        return registry.get_experiment("exp1").to_dict()

    created = answer("POST /admin/experiments", "/admin/experiments", body, view=exp1)
    assert created["status"] == "active" and [a["weight"] for a in created["arms"]] == [0.7, 0.3]
    answer(
        "GET /admin/experiments",
        "/admin/experiments",
        view=lambda: {"object": "list", "data": [e.to_dict() for e in registry.list_experiments()]},
    )
    stopped = answer("POST /admin/experiments/{name}/stop", "/admin/experiments/exp1/stop", view=exp1)
    assert stopped["status"] == "stopped" and stopped["stopped_at"]
    registry.heartbeat("r1", [v1.ref], registry.generation(), failed={v2.ref: "smoke generation failed"})
    replicas = answer(
        "GET /admin/replicas",
        "/admin/replicas",
        view=lambda: {"object": "list", "data": [r.to_dict() for r in registry.live_replicas()]},
    )
    assert [r["replica_id"] for r in replicas["data"]] == ["r1"]
    assert seen == set(ADMIN_ANSWERS)
    r = admin_client.post("/v1/unload_lora_adapter", json={"lora_name": "ghost"})
    assert r.status_code == 404
    _validator(doc, "VLLMErrorResponse").validate(r.json())
    message = "The lora adapter 'ghost' cannot be found."
    assert r.content == encode_json(
        {"error": {"message": message, "type": "NotFoundError", "param": None, "code": 404}}
    )
