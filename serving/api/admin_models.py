"""Response models of the admin API (`/admin/...`): the registry's JSON views, typed; and vLLM's error
envelope, which the vLLM-compatible adapter endpoints answer with.

The registry's values know their own JSON view (`AdapterVersion.to_dict()`, `SwapResult.to_dict()`, ...;
the CLI prints the same views), so a model here is built from that view (`of`), never field by field:
the values (ISO timestamps, `ref`, `rejected_reason`, swap timings rounded to ms) are computed once, in
the registry, and the model only states their types for the OpenAPI document. The views are strict,
refuse unknown keys and have no defaults, so a key added to or dropped from a view fails the admin
tests instead of leaving the document behind; what they serialize to is the view itself, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Generic, Literal, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from serving.hotswap import SwapResult
from serving.registry.models import AdapterVersion, AliasEvent, ExperimentStatus, VersionStatus

__all__ = [
    "AdapterHistory",
    "AdapterRegistered",
    "AdapterVersionList",
    "AdapterVersionView",
    "AliasEventView",
    "ExperimentArmView",
    "ExperimentList",
    "ExperimentView",
    "ReplicaStatusList",
    "ReplicaStatusView",
    "SwapResultView",
    "VersionRemoved",
    "VLLMErrorDetail",
    "VLLMErrorResponse",
]

_DATE_TIME = Field(json_schema_extra={"format": "date-time"})
Timestamp = Annotated[str, _DATE_TIME]
"""An ISO 8601 date and time, as `datetime.isoformat()` writes it (kept as the registry wrote it)."""


class _Viewable(Protocol):
    def to_dict(self) -> Mapping[str, Any]: ...


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class _View(_Answer):
    """A registry value's JSON view, typed."""

    @classmethod
    def of(cls, value: _Viewable) -> Self:
        return cls.model_validate(value.to_dict())


class AdapterVersionView(_View):
    """One adapter version (`AdapterVersion.to_dict()`)."""

    name: str
    version: str
    """The sha256 hex of the version's adapter_model.safetensors."""
    ref: str
    """`name@version`."""
    base_model: str
    base_fingerprint: str | None
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    uri: str
    parent: str | None
    dataset_hash: str | None
    training_config: dict[str, Any] | None
    eval_results: dict[str, Any] | None
    metadata: dict[str, Any] | None
    status: VersionStatus
    rejected_reason: str | None
    """Why the version was rejected (status `rejected`), else null."""
    created_at: Timestamp
    aliases: list[str]
    """Aliases of `name` pointing at this version."""


class SwapResultView(_View):
    """An alias moved by the hot-swap protocol (`SwapResult.to_dict()`)."""

    name: str
    alias: str
    from_version: str | None
    to_version: str
    replicas: list[str]
    """The live replicas that had the target loaded before the alias moved."""
    staged_s: float
    """Seconds until every replica had the target loaded."""
    total_s: float


class AliasEventView(_View):
    """One alias move (`AliasEvent.to_dict()`)."""

    id: int
    name: str
    alias: str
    from_version: str | None
    to_version: str | None
    kind: str
    """`set` (promotions included), `rollback` or `delete`."""
    actor: str
    reason: str
    at: Timestamp


class ExperimentArmView(_View):
    """One weighted arm (`ExperimentArm.to_dict()`)."""

    model: str
    """The model string as given (the arm's label)."""
    weight: float
    target: str
    """What the arm serves: `name@version` or the base model id."""


class ExperimentView(_View):
    """An A/B experiment (`Experiment.to_dict()`)."""

    name: str
    arms: list[ExperimentArmView]
    shadow: str | None
    """The shadow's target (gets a copy of each request, never answers), or null."""
    status: ExperimentStatus
    created_at: Timestamp
    stopped_at: Annotated[str | None, _DATE_TIME]
    description: str
    intercept: str | None
    """A model name whose requests the experiment takes over while active (canary), or null."""


class ReplicaStatusView(_View):
    """A replica's last heartbeat (`ReplicaStatus.to_dict()`)."""

    replica_id: str
    loaded: list[str]
    """Versions loaded and serving, as `name@version`."""
    failed: dict[str, str]
    """Versions the replica refused (`name@version` -> reason)."""
    generation: int
    """The registry generation the replica has applied."""
    heartbeat_at: Timestamp


V = TypeVar("V", bound=_View)


class _List(_Answer, Generic[V]):
    """`{"object": "list", "data": [...]}`, as OpenAI's lists."""

    object: Literal["list"] = "list"
    data: list[V]

    @classmethod
    def of(cls, values: Iterable[_Viewable]) -> Self:
        return cls.model_validate({"data": [value.to_dict() for value in values]})


class AdapterVersionList(_List[AdapterVersionView]):
    """`GET /admin/adapters`."""


class ExperimentList(_List[ExperimentView]):
    """`GET /admin/experiments`."""


class ReplicaStatusList(_List[ReplicaStatusView]):
    """`GET /admin/replicas`: the replicas with a recent heartbeat."""


class AdapterRegistered(_Answer):
    """`POST /admin/adapters`: the new version, and the alias move when the request named an alias."""

    adapter: AdapterVersionView
    swap: SwapResultView | None = None
    """Present only when the request named an `alias` (never null)."""

    @model_serializer(mode="wrap")
    def _swap_only_when_moved(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = serialize(self)
        if self.swap is None:
            del data["swap"]
        return data

    @classmethod
    def of(cls, version: AdapterVersion, swap: SwapResult | None) -> Self:
        return cls(adapter=AdapterVersionView.of(version), swap=SwapResultView.of(swap) if swap else None)


class AdapterHistory(_Answer):
    """`GET /admin/adapters/{name}`: every version of the adapter (retired and rejected ones too) and its
    aliases' moves."""

    name: str
    versions: list[AdapterVersionView]
    alias_history: list[AliasEventView]

    @classmethod
    def of(cls, name: str, versions: Iterable[AdapterVersion], history: Iterable[AliasEvent]) -> Self:
        return cls(
            name=name,
            versions=[AdapterVersionView.of(v) for v in versions],
            alias_history=[AliasEventView.of(e) for e in history],
        )


class VersionRemoved(_Answer):
    """`DELETE /admin/adapters/{name}/versions/{version}`: the version, now retired."""

    removed: AdapterVersionView


class VLLMErrorDetail(_Answer):
    message: str
    type: str
    param: str | None
    code: int
    """The HTTP status."""


class VLLMErrorResponse(_Answer):
    """The vLLM-compatible adapter endpoints' errors (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`):
    vLLM's envelope, which is OpenAI's with the HTTP status as an integer `code`."""

    error: VLLMErrorDetail
