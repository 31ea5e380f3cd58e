"""The registry's side of model-name resolution.

There is one resolver, `serving.router.RoutingSnapshot`; the registry resolves names (experiment arms and
shadows, intercepts, parents, `AdapterRegistry.resolve`, version references such as `support@champion`)
by building a snapshot of its own state and asking it. This module builds that snapshot and words a
`Miss` as the registry's typed errors (`ModelNotFoundError` family, `InvalidNameError`,
`AmbiguousVersionError`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from serving.registry.errors import (
    AliasNotFoundError,
    AmbiguousVersionError,
    ExperimentNotFoundError,
    InvalidNameError,
    ModelNotFoundError,
    RegistryError,
    VersionNotFoundError,
)
from serving.registry.models import AdapterVersion, Experiment
from serving.router import DEFAULT_ALIAS, MIN_PREFIX, Arm, ExperimentSpec, Miss, RoutingSnapshot, VersionRef

__all__ = ["experiment_spec", "miss_error", "routing_snapshot"]


def experiment_spec(experiment: Experiment) -> ExperimentSpec:
    """An experiment as the router sees it: arms and shadow pinned to their targets."""
    return ExperimentSpec(
        name=experiment.name,
        arms=tuple(Arm(model=a.model, weight=a.weight, target=a.target) for a in experiment.arms),
        shadow=experiment.shadow.target if experiment.shadow is not None else None,
        intercept=experiment.intercept,
    )


def routing_snapshot(
    base_id: str,
    base_aliases: Iterable[str],
    versions: Iterable[AdapterVersion],
    aliases: Mapping[str, Mapping[str, str]],
    experiments: Iterable[Experiment],
    *,
    generation: int = -1,
) -> RoutingSnapshot:
    """A snapshot holding `versions` (by their artifact URI), all `aliases` (name -> alias -> version) and
    the active `experiments`."""
    return RoutingSnapshot.build(
        base_id,
        (VersionRef(v.name, v.version, v.uri) for v in versions),
        {(name, alias): version for name, mapping in aliases.items() for alias, version in mapping.items()},
        (experiment_spec(e) for e in experiments if e.is_active),
        base_aliases=base_aliases,
        generation=generation,
    )


def miss_error(miss: Miss, *, by_ref: bool = False, stopped: Container[str] = ()) -> RegistryError:
    """The registry's error for `miss`. `by_ref`: the name was a version reference of an adapter (any
    status), e.g. for `get(name, ref)`, not a request's model; `stopped`: names of stopped experiments."""
    model, name, ref = miss.model, miss.name, miss.ref
    prefix = ref.lower()
    reason = miss.reason
    if reason == "unknown":
        if by_ref:
            return ModelNotFoundError(f"no adapter named {name!r}")
        if not model:
            return ModelNotFoundError("no model given")
        if model in stopped:
            return ExperimentNotFoundError(f"experiment {model!r} is stopped")
        return ModelNotFoundError(f"the model {model!r} does not exist")
    if reason == "malformed" and not by_ref:
        return ModelNotFoundError(f"model {model!r} is not of the form name@alias or name@version")
    if reason == "no_champion":
        return AliasNotFoundError(
            f"adapter {name!r} has no {DEFAULT_ALIAS!r} alias yet; address a version as "
            f"{name}@<alias> or {name}@<version prefix>, or promote one with set_alias"
        )
    if reason in ("no_alias", "malformed"):
        return AliasNotFoundError(f"adapter {name!r} has no alias {ref!r}")
    if reason == "bad_prefix":
        return InvalidNameError(
            f"invalid version reference {prefix!r}: give at least {MIN_PREFIX} hex characters"
        )
    if reason == "ambiguous":
        return AmbiguousVersionError(
            f"version prefix {prefix!r} of {name!r} matches {len(miss.candidates)} versions; "
            "give more characters",
            candidates=miss.candidates,
        )
    if reason == "no_version":
        return VersionNotFoundError(
            f"adapter {name!r} has no {'' if by_ref else 'active '}version {prefix}..."
        )
    return VersionNotFoundError(f"alias {name}@{ref} points at unknown version {miss.version}")
