"""The OpenAPI document served at `/schema/openapi.json`, accurate enough for clients and fuzzers.

Routes parse their JSON bodies themselves (to answer OpenAI-style 400s naming the field), so Litestar
cannot see the request models. This module adds them: each body's pydantic JSON schema becomes the
operation's `requestBody` (with `$defs` moved into `components/schemas`), every operation documents the
OpenAI error envelope for its 4xx/5xx answers, and bearer auth is declared for both token kinds.
"""

from __future__ import annotations

import copy
from typing import Any

from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from pydantic import BaseModel

from serving.api.admin import AliasBody, ExperimentBody, RegisterBody, RollbackBody
from serving.protocol import ChatCompletionRequest, CompletionRequest, FeedbackRequest

__all__ = ["REQUEST_BODIES", "openapi_config", "with_request_bodies"]

REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatCompletionRequest,
    ("/v1/completions", "post"): CompletionRequest,
    ("/v1/feedback", "post"): FeedbackRequest,
    ("/admin/adapters", "post"): RegisterBody,
    ("/admin/adapters/{name}/aliases/{alias}", "put"): AliasBody,
    ("/admin/adapters/{name}/rollback", "post"): RollbackBody,
    ("/admin/experiments", "post"): ExperimentBody,
}
"""(path, method) -> the pydantic model its JSON body is validated with."""

_REF = "#/components/schemas/{model}"
_ERROR_SCHEMA = "OpenAIError"
_ERRORS = {
    "400": "The request is invalid (the message and `param` name the field).",
    "401": "Missing or wrong API key / admin token.",
    "404": "No such model, adapter, experiment or route.",
    "409": "Conflicts with the current state (e.g. an adapter refused while loading).",
    "413": "Request body too large.",
    "429": "Rate limit exceeded.",
    "503": "Not ready, or a dependency is unavailable.",
}


def _error_schema() -> dict[str, Any]:
    nullable = {"type": ["string", "null"]}
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"}}
                | {"param": nullable, "code": nullable},
            }
        },
    }


def with_request_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of Litestar's OpenAPI document with request bodies, error responses and security added."""
    doc = copy.deepcopy(schema)
    doc.setdefault("info", {})["title"] = "tuneloop"
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[_ERROR_SCHEMA] = _error_schema()
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{_ERROR_SCHEMA}"}}}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            model = REQUEST_BODIES.get((path, method))
            if model is not None:
                body = model.model_json_schema(ref_template=_REF)
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
                }
            responses = operation["responses"]
            for status, description in _ERRORS.items():
                responses[status] = {"description": description, "content": error_content}
            if path.startswith(("/v1/", "/admin/")):
                operation["security"] = [{"bearer": []}]
    return doc


class _JsonWithBodies(JsonRenderPlugin):
    """Serves `with_request_bodies(...)` of Litestar's generated document (computed once)."""

    def __init__(self) -> None:
        super().__init__()
        self._doc: dict[str, Any] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._doc is None:
            self._doc = with_request_bodies(openapi_schema)
        return self.render_json(request, self._doc)


def openapi_config(version: str = "0.1.0") -> OpenAPIConfig:
    """Litestar's OpenAPI settings for the serving app: the document at `/schema/openapi.json`."""
    return OpenAPIConfig(title="tuneloop", version=version, render_plugins=[_JsonWithBodies()])
