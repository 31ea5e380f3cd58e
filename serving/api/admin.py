"""Admin API (`/admin/...`): adapters, aliases (hot-swap, rollback), experiments, replicas.

Protected by a bearer token separate from inference keys; with no admin token configured the admin API
answers 403 to everything. Registration over HTTP only accepts adapter folders under the configured
import roots (paths are resolved, so `..` and symlinks cannot escape them).
"""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from typing import Annotated, Any, TypeVar

from litestar import Request, delete, get, post, put
from litestar.datastructures import State
from litestar.params import PathParameter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.api.errors import validation_error
from serving.api.ingress import bearer_token
from serving.errors import AuthenticationError, BadRequestError, PermissionDeniedError
from serving.hotswap import rollback_alias, swap_alias
from serving.registry.registry import AdapterRegistry

Name = Annotated[str, PathParameter()]
T = TypeVar("T", bound=BaseModel)


def _auth(request: Request[Any, Any, Any]) -> None:
    token: str | None = request.app.state.get("admin_token")
    if not token:
        raise PermissionDeniedError(
            "The admin API is disabled: no admin token is configured.", code="admin_disabled"
        )
    given = bearer_token(request.headers.get("authorization"))
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise AuthenticationError("Incorrect or missing admin token.")


def _registry(state: State) -> AdapterRegistry:
    return state["registry"]


async def _sync_local(state: State) -> None:
    """Apply a registry change on this replica now (others follow on their next poll)."""
    await state["core"].reconcile()


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096)
    name: str = Field(min_length=1, max_length=64)
    alias: str | None = None
    parent: str | None = None
    metadata: dict[str, Any] | None = None


class AliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=128)
    reason: str = ""


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = "champion"
    reason: str = "rollback"


class ArmBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    weight: float = Field(gt=0)


class ExperimentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    arms: list[ArmBody] = Field(min_length=1)
    shadow: str | None = None
    description: str = ""
    intercept: str | None = None


async def _body(request: Request[Any, Any, Any], model: type[T]) -> T:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise validation_error(exc) from exc


def confine(path: str, roots: list[Path]) -> Path:
    """The resolved folder, if it lies under one of the import roots; else a 400."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # NUL byte, name too long, symlink loop, no $HOME
        raise BadRequestError(
            f"Adapter path {path!r} is not a usable path: {exc}", param="path", code="invalid_path"
        ) from None
    for root in roots:
        root = root.resolve()
        if resolved == root or root in resolved.parents:
            return resolved
    raise BadRequestError(
        f"Adapter path {path!r} is outside the allowed import roots ({', '.join(str(r) for r in roots)}).",
        param="path",
        code="path_not_allowed",
    )


@get("/admin/adapters")
async def list_adapters(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    _auth(request)
    versions = await asyncio.to_thread(_registry(state).list)
    return {"object": "list", "data": [v.to_dict() for v in versions]}


@post("/admin/adapters", status_code=201)
async def register_adapter(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    _auth(request)
    body = await _body(request, RegisterBody)
    folder = confine(body.path, state["import_roots"])
    reg = _registry(state)
    version = await asyncio.to_thread(
        reg.register, folder, body.name, metadata=body.metadata, parent=body.parent, actor="admin-api"
    )
    result: dict[str, Any] = {"adapter": version.to_dict()}
    if body.alias:
        swap = await asyncio.to_thread(
            swap_alias,
            reg,
            body.name,
            body.alias,
            version.version,
            actor="admin-api",
            reason="registered",
            timeout_s=state["swap_timeout_s"],
        )
        result["swap"] = swap.to_dict()
    await _sync_local(state)
    return result


@get("/admin/adapters/{name:str}")
async def show_adapter(request: Request[Any, Any, Any], state: State, name: Name) -> dict[str, Any]:
    _auth(request)
    reg = _registry(state)
    versions = await asyncio.to_thread(reg.list, name, include_retired=True)
    if not versions:
        from serving.registry.errors import ModelNotFoundError

        raise ModelNotFoundError(f"no adapter named {name!r}")
    history = await asyncio.to_thread(reg.alias_history, name)
    return {
        "name": name,
        "versions": [v.to_dict() for v in versions],
        "alias_history": [e.to_dict() for e in history],
    }


@put("/admin/adapters/{name:str}/aliases/{alias:str}")
async def move_alias(
    request: Request[Any, Any, Any], state: State, name: Name, alias: Name
) -> dict[str, Any]:
    _auth(request)
    body = await _body(request, AliasBody)
    swap = await asyncio.to_thread(
        swap_alias,
        _registry(state),
        name,
        alias,
        body.version,
        actor="admin-api",
        reason=body.reason,
        timeout_s=state["swap_timeout_s"],
    )
    await _sync_local(state)
    return swap.to_dict()


@post("/admin/adapters/{name:str}/rollback", status_code=200)
async def rollback(request: Request[Any, Any, Any], state: State, name: Name) -> dict[str, Any]:
    _auth(request)
    body = await _body(request, RollbackBody)
    swap = await asyncio.to_thread(
        rollback_alias,
        _registry(state),
        name,
        body.alias,
        actor="admin-api",
        reason=body.reason,
        timeout_s=state["swap_timeout_s"],
    )
    await _sync_local(state)
    return swap.to_dict()


@delete("/admin/adapters/{name:str}/versions/{version:str}", status_code=200)
async def remove_version(
    request: Request[Any, Any, Any], state: State, name: Name, version: Name
) -> dict[str, Any]:
    _auth(request)
    removed = await asyncio.to_thread(_registry(state).remove, name, version)
    return {"removed": removed.to_dict()}


@get("/admin/experiments")
async def list_experiments(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    _auth(request)
    exps = await asyncio.to_thread(_registry(state).list_experiments)
    return {"object": "list", "data": [e.to_dict() for e in exps]}


@post("/admin/experiments", status_code=201)
async def create_experiment(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    _auth(request)
    body = await _body(request, ExperimentBody)
    exp = await asyncio.to_thread(
        _registry(state).create_experiment,
        body.name,
        [(a.model, a.weight) for a in body.arms],
        shadow=body.shadow,
        description=body.description,
        intercept=body.intercept,
    )
    await _sync_local(state)
    return exp.to_dict()


@post("/admin/experiments/{name:str}/stop", status_code=200)
async def stop_experiment(request: Request[Any, Any, Any], state: State, name: Name) -> dict[str, Any]:
    _auth(request)
    exp = await asyncio.to_thread(_registry(state).stop_experiment, name)
    await _sync_local(state)
    return exp.to_dict()


@get("/admin/replicas")
async def replicas(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    _auth(request)
    live = await asyncio.to_thread(_registry(state).live_replicas)
    return {"object": "list", "data": [r.to_dict() for r in live]}


ADMIN_ROUTES = [
    list_adapters,
    register_adapter,
    show_adapter,
    move_alias,
    rollback,
    remove_version,
    list_experiments,
    create_experiment,
    stop_experiment,
    replicas,
]
