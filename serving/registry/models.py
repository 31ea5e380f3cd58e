"""Typed, immutable values the registry returns (never ORM rows, so callers never hold a session)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "REJECTION_KEY",
    "AdapterVersion",
    "ExperimentStatus",
    "VersionStatus",
    "not_servable",
    "AliasEvent",
    "Experiment",
    "ExperimentArm",
    "ReplicaStatus",
    "ResolvedModel",
]


VersionStatus = Literal["active", "retired", "rejected"]
"""active: servable; retired: removed by an operator (row kept for lineage); rejected: its first load or
smoke generation on a replica failed, never servable (the reason is in `AdapterVersion.rejection`)."""

ExperimentStatus = Literal["active", "stopped"]

REJECTION_KEY = "tuneloop_rejected"
"""Key in a version's metadata holding why it was rejected: {"reason", "replica", "at"}."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    """One immutable adapter version. `version` is the sha256 hex of its adapter_model.safetensors."""

    name: str
    version: str
    base_model: str
    base_fingerprint: str | None
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    uri: str
    parent: str | None
    dataset_hash: str | None
    training_config: Mapping[str, Any] | None
    eval_results: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    status: VersionStatus
    created_at: datetime
    aliases: tuple[str, ...] = ()
    """Aliases of `name` pointing at this version when it was read."""

    @property
    def ref(self) -> str:
        """Canonical reference `name@<full version>` (what lineage, experiments and replicas store)."""
        return f"{self.name}@{self.version}"

    @property
    def short_ref(self) -> str:
        """`name@<first 12 hex>`: unique in practice, used as the engine's LoRA name."""
        return f"{self.name}@{self.version[:12]}"

    @property
    def rejection(self) -> Mapping[str, Any] | None:
        """Why the version was rejected ({"reason", "replica", "at"}), None unless status is rejected."""
        if self.status != "rejected" or not self.metadata:
            return None
        found = self.metadata.get(REJECTION_KEY)
        return found if isinstance(found, Mapping) else {"reason": str(found)}

    @property
    def lora_int_id(self) -> int:
        """A stable positive 31-bit integer id derived from the version hash (for vLLM's LoRARequest)."""
        return (int(self.version[:8], 16) & 0x7FFFFFFF) or 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (API responses, CLI output)."""
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "base_model": self.base_model,
            "base_fingerprint": self.base_fingerprint,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "size_bytes": self.size_bytes,
            "uri": self.uri,
            "parent": self.parent,
            "dataset_hash": self.dataset_hash,
            "training_config": dict(self.training_config) if self.training_config is not None else None,
            "eval_results": dict(self.eval_results) if self.eval_results is not None else None,
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "status": self.status,
            "rejected_reason": str(self.rejection.get("reason", "")) if self.rejection else None,
            "created_at": _iso(self.created_at),
            "aliases": list(self.aliases),
        }


def not_servable(version: AdapterVersion) -> str:
    """Why `version` (not active) cannot be served or staged, for an error message."""
    if version.status == "rejected":
        reason = version.rejection.get("reason", "") if version.rejection else ""
        return (
            f"{version.short_ref} was rejected: {reason or 'its first load failed'}; fix the adapter and "
            "register the new weights"
        )
    return f"{version.short_ref} is retired; register it again to use it"


@dataclass(frozen=True, slots=True)
class ExperimentArm:
    """One weighted arm of an experiment, pinned to a concrete target when the experiment was created.

    `model` is the model string as given (the arm's label, logged as `requests.arm`); `version` is
    the pinned adapter version, or None when the arm is the base model (`name` is then the base id).
    """

    model: str
    weight: float
    name: str
    version: AdapterVersion | None

    @property
    def target(self) -> str:
        """Canonical target: `name@<full version>` or the base model id."""
        return self.version.ref if self.version is not None else self.name

    def resolved(self, requested: str) -> ResolvedModel:
        """This arm as a `ResolvedModel` (what the router serves for a request to the experiment)."""
        if self.version is None:
            return ResolvedModel(requested=requested, kind="base", name=self.name)
        return ResolvedModel(requested=requested, kind="adapter", name=self.name, version=self.version)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weight": self.weight, "target": self.target}


@dataclass(frozen=True, slots=True)
class Experiment:
    """A/B experiment: traffic to `name` is split over `arms` by weight; `shadow` gets a copy of each
    request."""

    name: str
    arms: tuple[ExperimentArm, ...]
    shadow: ExperimentArm | None
    status: ExperimentStatus
    created_at: datetime
    stopped_at: datetime | None
    description: str
    intercept: str | None = None
    """A model name whose requests this experiment takes over while active (canary), else None."""

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def total_weight(self) -> float:
        return sum(arm.weight for arm in self.arms)

    def versions(self) -> tuple[AdapterVersion, ...]:
        """Adapter versions the experiment needs loaded (arms and shadow; base arms need none)."""
        targets = [*self.arms, *([self.shadow] if self.shadow is not None else [])]
        return tuple(arm.version for arm in targets if arm.version is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arms": [arm.to_dict() for arm in self.arms],
            "shadow": self.shadow.target if self.shadow is not None else None,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "stopped_at": _iso(self.stopped_at),
            "description": self.description,
            "intercept": self.intercept,
        }


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a request's `model` string means.

    kind 'base': serve the base model (`name` is the base id). kind 'adapter': serve `version` through
    the base (`alias` is set when it was reached through an alias). kind 'experiment': the router picks an
    arm of `experiment` (`ExperimentArm.resolved()`) and mirrors to its shadow.
    """

    requested: str
    kind: Literal["base", "adapter", "experiment"]
    name: str
    version: AdapterVersion | None = None
    alias: str | None = None
    experiment: Experiment | None = None

    @property
    def is_base(self) -> bool:
        return self.kind == "base"

    @property
    def is_experiment(self) -> bool:
        return self.kind == "experiment"

    @property
    def served_version(self) -> str | None:
        """Value of `requests.served_version`: the adapter version, None for the base (or an experiment)."""
        return self.version.version if self.version is not None else None


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One alias move. kind: 'set' (incl. promotion), 'rollback', 'delete'."""

    id: int
    name: str
    alias: str
    from_version: str | None
    to_version: str | None
    kind: str
    actor: str
    reason: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "kind": self.kind,
            "actor": self.actor,
            "reason": self.reason,
            "at": _iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A replica's last heartbeat."""

    replica_id: str
    loaded: tuple[str, ...]
    """Versions loaded and serving, as "name@version"."""
    generation: int
    """The registry generation the replica has applied."""
    heartbeat_at: datetime
    failed: Mapping[str, str] = field(default_factory=dict)
    """Versions the replica refused ("name@version" -> reason, e.g. the smoke generation failed)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "loaded": list(self.loaded),
            "failed": dict(self.failed),
            "generation": self.generation,
            "heartbeat_at": _iso(self.heartbeat_at),
        }
