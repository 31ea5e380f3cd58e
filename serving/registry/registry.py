"""The versioned adapter registry: versions, aliases (with history), experiments, model-name resolution,
the desired adapter set replicas reconcile to, and replica heartbeats.

`AdapterRegistry` is composed of one part per concept, all over the same state and write transaction:

* `serving.registry.base`: configuration, reads, the write transaction, name lookups and `resolve`;
* `serving.registry.versions`: register, validate, update metadata, remove (retire), list, lineage;
* `serving.registry.aliases`: set / delete aliases, their history, rollback;
* `serving.registry.experiments`: create, get, list, stop experiments;
* `serving.registry.fleet`: the desired set, hot-swap stages, replica heartbeats.

Model names are resolved by the router's one resolver (`serving.router`, rules there) on a snapshot of
the registry state (`serving.registry.resolution`): `resolve(model)` says what a request's `model`
means now (an active experiment, or one it intercepts -> kind 'experiment'; the router picks an arm);
unknown names raise the `ModelNotFoundError` family, a too-short version prefix `InvalidNameError`, an
ambiguous one `AmbiguousVersionError`. Requests never call it: replicas route on their own snapshot.

Consistency: every write runs in one transaction that first bumps `registry_state.generation` (which
also serializes registry writers on SQLite and Postgres), then re-reads the state and applies the
change (`serving.registry.state.write_state`). Reads load the current state (one small query per table).
"""

from __future__ import annotations

from serving.registry.aliases import CHAMPION, check_alias
from serving.registry.experiments import ArmSpec, ExperimentsMixin
from serving.registry.fleet import FleetMixin
from serving.registry.versions import VersionsMixin

__all__ = ["CHAMPION", "AdapterRegistry", "ArmSpec", "check_alias"]


class AdapterRegistry(VersionsMixin, ExperimentsMixin, FleetMixin):
    """Adapter versions, aliases and experiments in the database; artifacts in an `ArtifactStore`."""
