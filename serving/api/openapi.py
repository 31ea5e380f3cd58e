"""The OpenAPI document served at `/schema/openapi.json`.

Litestar generates it from the routes' types: request bodies from the typed `data` parameters (with the
models' own JSON schemas, see `serving.api.bodies`), success answers from the return types and the
`ResponseSpec`s, the OpenAI error envelope for every 4xx/5xx (`serving.api.openai.ERROR_RESPONSES`), bearer
auth from the routers' `security`. This module only holds the settings.
"""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

__all__ = ["BEARER", "openapi_config"]

BEARER: SecurityRequirement = {"bearer": []}
"""Inference key or admin token, as `Authorization: Bearer <token>`."""


def openapi_config(version: str = "0.1.0") -> OpenAPIConfig:
    """Litestar's OpenAPI settings for the serving app: the document at `/schema/openapi.json`."""
    return OpenAPIConfig(
        title="tuneloop",
        version=version,
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
        render_plugins=[JsonRenderPlugin()],
    )
