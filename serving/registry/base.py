"""What every part of the `AdapterRegistry` shares: its configuration, reads and the write transaction
(`serving.registry.state`), and name lookups, which go through the router's one resolver
(`serving.router`) on a snapshot of the state (`serving.registry.resolution`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy.orm import Session

from serving.registry.artifacts import ArtifactStore, check_name
from serving.registry.errors import InvalidRequestError
from serving.registry.models import AdapterVersion, ResolvedModel
from serving.registry.resolution import miss_error, routing_snapshot
from serving.registry.state import RegistryState, read_generation, read_state, write_state
from serving.registry.validation import DEFAULT_MAX_ADAPTER_BYTES, BaseModelSpec
from serving.router import Miss, RoutingSnapshot, VersionRef, base_names
from serving.store import Database

__all__ = ["RegistryBase"]


class RegistryBase:
    """Configuration, state access and name lookups of the registry (its parts subclass this)."""

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        base_model_id: str,
        base_modules: Collection[str],
        max_lora_rank: int,
        *,
        base_aliases: Collection[str] = (),
        base_fingerprint: str | None = None,
        max_adapter_bytes: int = DEFAULT_MAX_ADAPTER_BYTES,
        snapshot_ttl_s: float | None = None,
        base_module_shapes: Mapping[str, Iterable[tuple[int, int]]] | None = None,
    ) -> None:
        """`base_aliases`: extra model names that mean the base besides `serving.router.base_names`
        (e.g. the local folder's name). `base_module_shapes`: (in, out) features of the base's modules by
        short name (`serving.registry.validation.base_module_shapes`), so validation checks every LoRA
        tensor's shape; None = not checked. `snapshot_ttl_s` is ignored (reads always see the current
        state; kept so existing callers need no change)."""
        del snapshot_ttl_s
        self.db = db
        self.artifacts = artifacts
        self.base_model_id = base_model_id
        self.base_aliases = tuple(base_aliases)
        self._base_names = base_names(base_model_id, self.base_aliases)
        self.spec = BaseModelSpec.create(
            base_model_id,
            base_modules,
            max_lora_rank,
            aliases=self._base_names,
            fingerprint=base_fingerprint,
            max_size_bytes=max_adapter_bytes,
            module_shapes=base_module_shapes,
        )

    # ================================================================== state

    def _fresh(self) -> RegistryState:
        return read_state(self.db)

    def _write(self) -> AbstractContextManager[tuple[Session, RegistryState]]:
        """The write transaction every change goes through (`serving.registry.state.write_state`)."""
        return write_state(self.db)

    def generation(self) -> int:
        """The registry generation: changes whenever versions, aliases or experiments change."""
        return read_generation(self.db)

    # ================================================================== names

    def _is_base(self, model: str) -> bool:
        return model in self._base_names

    def is_base_name(self, model: str) -> bool:
        """Whether `model` names the base model (its id, basename, `default`, `base`, configured aliases)."""
        return self._is_base(model)

    def _routing(self, state: RegistryState, *, include_retired: bool = False) -> RoutingSnapshot:
        """`state` as a routing snapshot: active versions (or all), all aliases, active experiments."""
        return routing_snapshot(
            self.base_model_id,
            self.base_aliases,
            (v for vs in state.versions.values() for v in vs if include_retired or v.status == "active"),
            state.aliases,
            state.experiments.values(),
            generation=state.generation,
        )

    def _lookup_ref(self, state: RegistryState, name: str, ref: str) -> tuple[AdapterVersion, str | None]:
        """`ref` is an alias of `name` or a version prefix (any status); returns (version, alias or None)."""
        check_name(name)
        found = self._routing(state, include_retired=True).lookup(f"{name}@{ref}")
        if isinstance(found, Miss):
            raise miss_error(found, by_ref=True)
        return self._version_of(state, found.version), found.alias

    @staticmethod
    def _version_of(state: RegistryState, ref: VersionRef | None) -> AdapterVersion:
        assert ref is not None
        version = state.find(ref.name, ref.version)
        assert version is not None
        return version

    def _resolve_in(
        self, state: RegistryState, model: str, *, allow_experiment: bool = True
    ) -> ResolvedModel:
        """What `model` means in `state` (see `resolve`); `allow_experiment=False` for arms and parents,
        which must name a model, not an experiment (intercepts do not apply to them)."""
        snapshot = self._routing(state)
        experiment = snapshot.experiment_for(model)
        if experiment is not None and (allow_experiment or model == experiment.name):
            if not allow_experiment:
                raise InvalidRequestError(
                    f"{model!r} is an experiment; an experiment cannot be an arm or a parent"
                )
            return ResolvedModel(
                requested=model,
                kind="experiment",
                name=experiment.name,
                experiment=state.experiments[experiment.name],
            )
        found = snapshot.lookup(model)
        if isinstance(found, Miss):
            stopped = {e.name for e in state.experiments.values() if not e.is_active}
            raise miss_error(found, stopped=stopped)
        if found.version is None:
            return ResolvedModel(requested=model, kind="base", name=self.base_model_id)
        version = self._version_of(state, found.version)
        return ResolvedModel(
            requested=model, kind="adapter", name=version.name, version=version, alias=found.alias
        )

    def resolve(self, model: str) -> ResolvedModel:
        """What a request's `model` string means now (rules: `serving.router`), on the current state.

        Raises `ModelNotFoundError` (and its subclasses `AliasNotFoundError`, `VersionNotFoundError`,
        `ExperimentNotFoundError`), `AmbiguousVersionError`, `InvalidNameError`."""
        return self._resolve_in(self._fresh(), model)

    def get(self, name: str, version_prefix: str) -> AdapterVersion:
        """One version (any status) by a unique version prefix (>= 6 hex chars) or an alias."""
        state = self._fresh()
        return self._lookup_ref(state, check_name(name), version_prefix)[0]

    def local_path(self, version: AdapterVersion) -> Path:
        """A local folder with the version's files (downloaded into the cache for remote stores)."""
        return self.artifacts.local_path(version.uri)
