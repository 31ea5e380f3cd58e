"""Hot-swap protocol: move an alias only after every live replica has loaded (and smoke-tested) the target.

1. *Stage* the target version: it joins the registry's desired set (generation bumps), so every replica
   loads it in its reconcile loop and reports it in its heartbeat — routing does not change yet.
2. *Wait* until every live replica reports the version loaded (or one reports it failed → abort,
   unstage, raise: the alias never points at an adapter that cannot serve).
3. *Move* the alias (generation bumps): replicas switch routing on their next poll; requests in flight
   finish on the version they started with; the old version is unloaded once it drained and nothing
   else wants it.
Rollback is the same protocol with the alias's previous version as the target.
Works from any process that reaches the registry database (admin API, CLI, the monitoring loop).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from serving.errors import ConflictError, ServiceUnavailableError
from serving.registry.models import AdapterVersion, not_servable
from serving.registry.registry import AdapterRegistry

HEARTBEAT_MAX_AGE_S = 15.0


@dataclass(frozen=True, slots=True)
class SwapResult:
    name: str
    alias: str
    from_version: str | None
    to_version: str
    replicas: tuple[str, ...]
    staged_s: float  # time until every replica had the target loaded
    total_s: float

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "replicas": list(self.replicas),
            "staged_s": round(self.staged_s, 3),
            "total_s": round(self.total_s, 3),
        }


def _alias_target(registry: AdapterRegistry, name: str, alias: str) -> str | None:
    for v in registry.list(name):
        if alias in v.aliases:
            return v.version
    return None


def wait_loaded(
    registry: AdapterRegistry,
    target: AdapterVersion,
    *,
    timeout_s: float,
    poll_s: float = 0.05,
    nudge: Callable[[], None] | None = None,
    min_generation: int = 0,
) -> tuple[str, ...]:
    """Block until every live replica has `target` loaded; raise if one refused it or time runs out."""
    deadline = time.monotonic() + timeout_s
    ref = target.ref
    while True:
        if nudge is not None:
            nudge()
        current = registry.get(target.name, target.version)
        if current.status != "active":  # rejected by a replica's load (for every replica), or retired
            raise ConflictError(
                f"{not_servable(current)}. The alias was not moved.",
                code="adapter_rejected" if current.status == "rejected" else "conflict",
            )
        replicas = registry.live_replicas(HEARTBEAT_MAX_AGE_S)
        failed = [(r.replica_id, r.failed[ref]) for r in replicas if ref in r.failed]
        if failed:
            replica, reason = failed[0]
            raise ConflictError(
                f"{target.short_ref} was refused by replica {replica}: {reason}. The alias was not moved.",
                code="adapter_rejected",
            )
        pending = [r.replica_id for r in replicas if ref not in r.loaded or r.generation < min_generation]
        if not pending:
            return tuple(r.replica_id for r in replicas)
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(
                f"replicas {pending} did not load {target.short_ref} within {timeout_s:.0f} s; "
                "the alias was not moved."
            )
        time.sleep(poll_s)


def swap_alias(
    registry: AdapterRegistry,
    name: str,
    alias: str,
    version_ref: str,
    *,
    actor: str = "cli",
    reason: str = "",
    timeout_s: float = 120.0,
    nudge: Callable[[], None] | None = None,
) -> SwapResult:
    """Point `name@alias` at `version_ref` once every live replica can serve it (see module doc)."""
    started = time.monotonic()
    target = registry.get(name, version_ref)
    if target.status != "active":
        raise ConflictError(
            not_servable(target), code="adapter_rejected" if target.status == "rejected" else "conflict"
        )
    before = _alias_target(registry, name, alias)
    token = f"swap-{uuid.uuid4().hex[:12]}"
    registry.stage(target.name, target.version, token)
    try:
        generation = registry.generation()
        replicas = wait_loaded(registry, target, timeout_s=timeout_s, nudge=nudge, min_generation=generation)
        staged = time.monotonic() - started
        registry.set_alias(name, alias, target.version, actor=actor, reason=reason or "swap")
    finally:
        registry.unstage(token)
    return SwapResult(name, alias, before, target.version, replicas, staged, time.monotonic() - started)


def rollback_alias(
    registry: AdapterRegistry,
    name: str,
    alias: str = "champion",
    *,
    actor: str = "cli",
    reason: str = "rollback",
    timeout_s: float = 120.0,
    nudge: Callable[[], None] | None = None,
) -> SwapResult:
    """Move `name@alias` back to its previous version, with the same load-before-switch guarantee."""
    started = time.monotonic()
    before = _alias_target(registry, name, alias)
    previous = registry.rollback_target(name, alias)
    token = f"rollback-{uuid.uuid4().hex[:12]}"
    registry.stage(previous.name, previous.version, token)
    try:
        generation = registry.generation()
        replicas = wait_loaded(
            registry, previous, timeout_s=timeout_s, nudge=nudge, min_generation=generation
        )
        staged = time.monotonic() - started
        moved = registry.rollback(name, alias, actor=actor, reason=reason)
    finally:
        registry.unstage(token)
    return SwapResult(name, alias, before, moved.version, replicas, staged, time.monotonic() - started)
