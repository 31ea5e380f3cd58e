"""Admin API (`/admin/...`): adapters, aliases (hot-swap, rollback), experiments, replicas.

Protected by a bearer token separate from inference keys (`AdminTokenGuard`); with no admin token
configured the admin API answers 403 to everything. Registration over HTTP only accepts adapter folders
under the configured import roots (paths are resolved, so `..` and symlinks cannot escape them).
Handlers get the registry and its settings as the `admin` dependency (`Admin`) and typed bodies
(`serving.api.bodies.JSONBody`), and answer with the models of `serving.api.admin_models` (the registry's
JSON views, typed), so the OpenAPI document describes every answer. A change to the registry runs in a
thread and is then applied on this replica (`_change`). The vLLM-compatible endpoints at the end keep
vLLM's own body rules (unknown fields ignored), plain-text success and error shape, so they parse their
bodies themselves (`_vllm_call`).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, ParamSpec, TypeVar

from litestar import MediaType, Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.api.admin_models import (
    AdapterHistory,
    AdapterRegistered,
    AdapterVersionList,
    AdapterVersionView,
    ExperimentList,
    ExperimentView,
    ReplicaStatusList,
    SwapResultView,
    VersionRemoved,
    VLLMErrorDetail,
    VLLMErrorResponse,
)
from serving.api.bodies import JSONBody
from serving.api.errors import ERROR_RESPONSES, api_error, validation_error
from serving.api.ingress import bearer_token
from serving.core import ServingCore
from serving.errors import APIError, AuthenticationError, BadRequestError, PermissionDeniedError
from serving.hotswap import SwapResult, rollback_alias, swap_alias
from serving.registry.artifacts import check_name
from serving.registry.errors import ModelNotFoundError, NotFoundError, RegistryError
from serving.registry.registry import CHAMPION, AdapterRegistry, check_alias
from serving.router import is_version_prefix

Name = Annotated[str, PathParameter()]
T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
P = ParamSpec("P")

ADMIN_ACTOR = "admin-api"
"""Who the registry's history names for a change made through the admin API."""
VLLM_ACTOR = "vllm-api"
"""... and through the vLLM-compatible adapter endpoints."""


@dataclass(frozen=True, slots=True)
class Admin:
    """What the admin routes work with (the `admin` dependency)."""

    registry: AdapterRegistry
    token: str | None
    """The admin bearer token; None = the admin API is disabled (403)."""
    import_roots: Sequence[Path]
    """Folders HTTP registration may read adapters from."""
    swap_timeout_s: float

    def check(self, authorization: str | None) -> None:
        """403 when the admin API is disabled, 401 unless `authorization` carries the admin token."""
        if not self.token:
            raise PermissionDeniedError(
                "The admin API is disabled: no admin token is configured.", code="admin_disabled"
            )
        given = bearer_token(authorization)
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise AuthenticationError("Incorrect or missing admin token.")

    def swap(
        self, name: str, alias: str, version: str, *, reason: str, actor: str = ADMIN_ACTOR
    ) -> SwapResult:
        """Move `name@alias` to `version` by the hot-swap protocol (blocks until the replicas have it)."""
        return swap_alias(
            self.registry, name, alias, version, actor=actor, reason=reason, timeout_s=self.swap_timeout_s
        )

    def rollback(self, name: str, alias: str, *, reason: str) -> SwapResult:
        """Move `name@alias` back to its previous version by the hot-swap protocol."""
        return rollback_alias(
            self.registry, name, alias, actor=ADMIN_ACTOR, reason=reason, timeout_s=self.swap_timeout_s
        )


class AdminTokenGuard:
    """Runs `Admin.check` before anything else of an admin route (body parsing included)."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self  # immutable; Litestar deep-copies routers, and the registry cannot be copied

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        self.admin.check(connection.headers.get("authorization"))


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


def confine(path: str, roots: Sequence[Path]) -> Path:
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


async def _change(core: ServingCore, change: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a registry change off the event loop, then apply it on this replica (the others follow on
    their next poll)."""
    result = await asyncio.to_thread(change, *args, **kwargs)
    await core.reconcile()
    return result


@get("/admin/adapters", responses=ERROR_RESPONSES)
async def list_adapters(admin: Admin, all: bool = False) -> AdapterVersionList:
    """Active versions; `?all=true` also retired and rejected ones (with `rejected_reason`)."""
    return AdapterVersionList.of(await asyncio.to_thread(admin.registry.list, include_retired=all))


@post(
    "/admin/adapters", dto=JSONBody[RegisterBody], return_dto=None, status_code=201, responses=ERROR_RESPONSES
)
async def register_adapter(data: RegisterBody, admin: Admin, core: ServingCore) -> AdapterRegistered:
    folder = confine(data.path, admin.import_roots)

    def register() -> AdapterRegistered:
        version = admin.registry.register(
            folder, data.name, metadata=data.metadata, parent=data.parent, actor=ADMIN_ACTOR
        )
        swap = admin.swap(data.name, data.alias, version.version, reason="registered") if data.alias else None
        return AdapterRegistered.of(version, swap)

    return await _change(core, register)


@get("/admin/adapters/{name:str}", responses=ERROR_RESPONSES)
async def show_adapter(admin: Admin, name: Name) -> AdapterHistory:
    reg = admin.registry
    versions = await asyncio.to_thread(reg.list, name, include_retired=True)
    if not versions:
        raise ModelNotFoundError(f"no adapter named {name!r}")
    return AdapterHistory.of(name, versions, await asyncio.to_thread(reg.alias_history, name))


@put(
    "/admin/adapters/{name:str}/aliases/{alias:str}",
    dto=JSONBody[AliasBody],
    return_dto=None,
    responses=ERROR_RESPONSES,
)
async def move_alias(
    data: AliasBody, admin: Admin, core: ServingCore, name: Name, alias: Name
) -> SwapResultView:
    return SwapResultView.of(await _change(core, admin.swap, name, alias, data.version, reason=data.reason))


@post(
    "/admin/adapters/{name:str}/rollback",
    dto=JSONBody[RollbackBody],
    return_dto=None,
    status_code=200,
    responses=ERROR_RESPONSES,
)
async def rollback(data: RollbackBody, admin: Admin, core: ServingCore, name: Name) -> SwapResultView:
    return SwapResultView.of(await _change(core, admin.rollback, name, data.alias, reason=data.reason))


@delete("/admin/adapters/{name:str}/versions/{version:str}", status_code=200, responses=ERROR_RESPONSES)
async def remove_version(admin: Admin, name: Name, version: Name) -> VersionRemoved:
    removed = await asyncio.to_thread(admin.registry.remove, name, version)
    return VersionRemoved(removed=AdapterVersionView.of(removed))


@get("/admin/experiments", responses=ERROR_RESPONSES)
async def list_experiments(admin: Admin) -> ExperimentList:
    return ExperimentList.of(await asyncio.to_thread(admin.registry.list_experiments))


@post(
    "/admin/experiments",
    dto=JSONBody[ExperimentBody],
    return_dto=None,
    status_code=201,
    responses=ERROR_RESPONSES,
)
async def create_experiment(data: ExperimentBody, admin: Admin, core: ServingCore) -> ExperimentView:
    exp = await _change(
        core,
        admin.registry.create_experiment,
        data.name,
        [(a.model, a.weight) for a in data.arms],
        shadow=data.shadow,
        description=data.description,
        intercept=data.intercept,
    )
    return ExperimentView.of(exp)


@post("/admin/experiments/{name:str}/stop", status_code=200, responses=ERROR_RESPONSES)
async def stop_experiment(admin: Admin, core: ServingCore, name: Name) -> ExperimentView:
    return ExperimentView.of(await _change(core, admin.registry.stop_experiment, name))


@get("/admin/replicas", responses=ERROR_RESPONSES)
async def replicas(admin: Admin) -> ReplicaStatusList:
    return ReplicaStatusList.of(await asyncio.to_thread(admin.registry.live_replicas))


# ------------------------------------------------------------------ vLLM-compatible adapter endpoints
# `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` as vLLM's OpenAI server has them (same
# bodies, a plain-text "Success: ..." on 200, errors as {"error": {"message", "type", "param", "code": int}}),
# so tooling written for vLLM can drive tuneloop; behind the admin token, and mapped onto the registry:
#
# * load {lora_name, lora_path}: `lora_name` is `name` or `name@alias` (the model name clients then send);
#   the folder (under an import root) is validated and registered as a version of `name`, and the alias
#   (`champion` for a bare name) is moved to it by the hot-swap protocol, so every live replica serves it
#   when the call returns. A name that already serves answers 400 unless `load_inplace` is true (then the
#   alias moves to the new weights, as vLLM reloads in place).
# * unload {lora_name}: `name` / `name@alias` deletes that alias (the versions stay registered and
#   addressable as `name@<version>`; `adapters rollback` restores it); `name@<version prefix>` retires the
#   version (refused while an alias or an experiment uses it).


class _VLLMBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    done: ClassVar[str]
    """What the success answer says happened to the adapter."""
    lora_name: str = Field(max_length=200)


class VLLMLoadBody(_VLLMBody):
    done = "added"
    lora_path: str = Field(max_length=4096)
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


class VLLMUnloadBody(_VLLMBody):
    done = "removed"
    lora_int_id: int | None = None


B = TypeVar("B", bound=_VLLMBody)


_VLLM_TYPES = {400: "BadRequestError", 401: "Unauthorized", 403: "Forbidden", 404: "NotFoundError"}


def _vllm_responses(body: type[_VLLMBody]) -> dict[int, ResponseSpec]:
    success = ResponseSpec(
        str,
        description=f"Plain text: `Success: LoRA adapter '<lora_name>' {body.done} successfully.`",
        media_type=MediaType.TEXT,
        generate_examples=False,
    )
    errors = {
        status: ResponseSpec(VLLMErrorResponse, description=spec.description, generate_examples=False)
        for status, spec in ERROR_RESPONSES.items()
    }
    return {200: success, **errors}


def _vllm_error(
    message: str, status: int, *, err_type: str | None = None, param: str | None = None
) -> Response[VLLMErrorResponse]:
    kind = (
        err_type or _VLLM_TYPES.get(status) or ("InternalServerError" if status >= 500 else "BadRequestError")
    )
    body = VLLMErrorResponse(error=VLLMErrorDetail(message=message, type=kind, param=param, code=status))
    return Response(body, status_code=status, media_type=MediaType.JSON)


def _invalid(message: str) -> Response[VLLMErrorResponse]:
    """vLLM's 400 for a request it refuses before touching anything (`InvalidUserInput`)."""
    return _vllm_error(message, 400, err_type="InvalidUserInput")


def _vllm_failure(exc: APIError | RegistryError) -> Response[VLLMErrorResponse]:
    """`api_error`'s status and message in vLLM's envelope (which names the domain error's `param` too)."""
    err = api_error(exc)
    return _vllm_error(err.message, err.status_code, param=exc.param)


def _split_lora_name(lora_name: str) -> tuple[str, str]:
    """(adapter name, alias or version prefix) of a vLLM `lora_name`; the alias defaults to champion."""
    name, _, ref = lora_name.partition("@")
    check_name(name)
    return name, ref or CHAMPION


async def _vllm_json(request: Request[Any, Any, Any], model: type[T]) -> T:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise BadRequestError(str(validation_error(exc).message)) from exc


VLLMChange = Callable[[Admin, B], Awaitable[Response[VLLMErrorResponse] | None]]
"""One vLLM adapter operation on the registry: None when done, else vLLM's refusal."""


async def _vllm_call(
    request: Request[Any, Any, Any],
    admin: Admin,
    core: ServingCore,
    body: type[B],
    change: VLLMChange[B],
) -> Response[Any]:
    """What both vLLM adapter endpoints do around their change: the admin token, the body, the change,
    then this replica applies it; vLLM's plain-text success, or any error in vLLM's envelope."""
    try:
        admin.check(request.headers.get("authorization"))
        data = await _vllm_json(request, body)
        refused = await change(admin, data)
        if refused is not None:
            return refused
        await core.reconcile()
    except (APIError, RegistryError) as exc:
        return _vllm_failure(exc)
    return Response(
        f"Success: LoRA adapter '{data.lora_name}' {data.done} successfully.",
        status_code=200,
        media_type=MediaType.TEXT,
    )


async def _load(admin: Admin, body: VLLMLoadBody) -> Response[VLLMErrorResponse] | None:
    if not body.lora_name or not body.lora_path:
        return _invalid("Both 'lora_name' and 'lora_path' must be provided.")
    reg = admin.registry
    if reg.is_base_name(body.lora_name) or reg.spec.matches(body.lora_name):
        return _invalid(f"The lora adapter '{body.lora_name}' conflicts with a served base model.")
    name, alias = _split_lora_name(body.lora_name)
    if is_version_prefix(alias):
        return _invalid(
            f"The lora adapter name '{body.lora_name}' must be 'name' or 'name@alias', not a version."
        )
    check_alias(alias)
    folder = confine(body.lora_path, admin.import_roots)
    current = await asyncio.to_thread(_alias_version, reg, name, alias)
    if current is not None and not body.load_inplace:
        return _invalid(
            f"The lora adapter '{body.lora_name}' has already been loaded. If you want to load the "
            "adapter in place, set 'load_inplace' to True."
        )
    version = await asyncio.to_thread(reg.register, folder, name, actor=VLLM_ACTOR)
    if current != version.version:
        await asyncio.to_thread(
            admin.swap, name, alias, version.version, reason="load_lora_adapter", actor=VLLM_ACTOR
        )
    return None


async def _unload(admin: Admin, body: VLLMUnloadBody) -> Response[VLLMErrorResponse] | None:
    if not body.lora_name:
        return _invalid("'lora_name' needs to be provided to unload a LoRA adapter.")
    not_found = _vllm_error(f"The lora adapter '{body.lora_name}' cannot be found.", 404)
    try:
        name, ref = _split_lora_name(body.lora_name)
    except RegistryError:
        return not_found
    reg = admin.registry
    unload: Callable[[], object] = (
        partial(reg.remove, name, ref)
        if is_version_prefix(ref)  # retire the version
        else partial(reg.delete_alias, name, ref, actor=VLLM_ACTOR, reason="unload_lora_adapter")
    )
    try:
        await asyncio.to_thread(unload)
    except NotFoundError:
        return not_found
    return None


@post("/v1/load_lora_adapter", status_code=200, responses=_vllm_responses(VLLMLoadBody))
async def vllm_load_lora_adapter(
    request: Request[Any, Any, Any], admin: Admin, core: ServingCore
) -> Response[Any]:
    return await _vllm_call(request, admin, core, VLLMLoadBody, _load)


@post("/v1/unload_lora_adapter", status_code=200, responses=_vllm_responses(VLLMUnloadBody))
async def vllm_unload_lora_adapter(
    request: Request[Any, Any, Any], admin: Admin, core: ServingCore
) -> Response[Any]:
    return await _vllm_call(request, admin, core, VLLMUnloadBody, _unload)


def _alias_version(registry: AdapterRegistry, name: str, alias: str) -> str | None:
    """The version `name@alias` points at (None when the name or the alias does not exist)."""
    return next((v.version for v in registry.list(name) if alias in v.aliases), None) if name else None


VLLM_ROUTES = [vllm_load_lora_adapter, vllm_unload_lora_adapter]
"""Check the admin token themselves: their errors have vLLM's shape, not OpenAI's."""

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
"""Behind `AdminTokenGuard`."""
