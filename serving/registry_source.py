"""Adapts the `AdapterRegistry` to what a replica's `ServingCore` polls (`RoutingSource`).

The core asks for the registry generation often (one cheap row) and for the full routing state only
when it changed: the desired adapter versions with local folders (downloaded from object stores into
the local cache when needed), every other active version (fetched only when a request names it:
`fetch`), the alias map and the active experiments with their pinned arms; and, before a version is
loaded, whether its files still hash to the version (`verify`).
"""

from __future__ import annotations

import logging

from serving.core import RoutingState
from serving.registry.artifacts import verify_folder
from serving.registry.errors import ArtifactError
from serving.registry.models import AdapterVersion
from serving.registry.registry import AdapterRegistry
from serving.registry.resolution import experiment_spec
from serving.router import VersionRef

log = logging.getLogger("tuneloop.serving")


class RegistrySource:
    def __init__(self, registry: AdapterRegistry) -> None:
        self.registry = registry
        self._unavailable: dict[str, str] = {}  # version key -> why its artifact could not be fetched

    def generation(self) -> int:
        return self.registry.generation()

    def routing_state(self) -> RoutingState:
        reg = self.registry
        generation = reg.generation()
        desired = reg.desired_set()
        versions = tuple(VersionRef(v.name, v.version, self._local_folder(v)) for v in desired)
        wanted = {(v.name, v.version) for v in desired}
        aliases: dict[tuple[str, str], str] = {}
        servable: list[VersionRef] = []
        for v in reg.list():
            for alias in v.aliases:
                aliases[(v.name, alias)] = v.version
            if (v.name, v.version) not in wanted:
                servable.append(VersionRef(v.name, v.version, ""))  # fetched when first requested
        experiments = tuple(experiment_spec(e) for e in reg.list_experiments(active_only=True))
        return RoutingState(
            generation=generation,
            versions=versions,
            aliases=aliases,
            experiments=experiments,
            servable=tuple(servable),
        )

    def fetch(self, ref: VersionRef) -> VersionRef:
        version = self.registry.get(ref.name, ref.version)
        if version.status != "active":
            raise ArtifactError(f"{version.short_ref} is {version.status}", code="artifact_missing")
        return VersionRef(ref.name, ref.version, str(self.registry.local_path(version)))

    def _local_folder(self, version: AdapterVersion) -> str:
        """The version's local folder; "" when its artifact is gone (the replica then refuses that version
        alone, in `verify`, instead of failing the whole reconcile)."""
        try:
            return str(self.registry.local_path(version))
        except ArtifactError as exc:
            self._unavailable[version.ref] = str(exc)
            log.error("adapter %s: artifact unavailable: %s", version.short_ref, exc)
            return ""

    def verify(self, ref: VersionRef) -> None:
        if not ref.path:
            reason = self._unavailable.get(ref.key, "its artifact is not in the store")
            raise ArtifactError(reason, code="artifact_missing")
        verify_folder(ref.path, ref.version)

    def heartbeat(self, replica_id: str, loaded: list[str], failed: dict[str, str], generation: int) -> None:
        self.registry.heartbeat(replica_id, loaded, generation, failed=failed)

    def reject(self, ref: VersionRef, reason: str, replica_id: str) -> None:
        self.registry.reject(ref.name, ref.version, reason, replica=replica_id)
