"""What replicas must load (the desired set, including versions staged for a hot-swap) and what they
report (heartbeats)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from serving.registry.artifacts import check_name
from serving.registry.base import RegistryBase
from serving.registry.errors import ConflictError, InvalidRequestError
from serving.registry.models import AdapterVersion, ReplicaStatus, not_servable
from serving.registry.state import Unchanged
from serving.store import ReplicaRow, StagedVersionRow, utcnow

__all__ = ["FleetMixin"]


class FleetMixin(RegistryBase):
    """The desired adapter set replicas reconcile to, hot-swap stages, and replica heartbeats."""

    def stage(self, name: str, version_ref: str, token: str, *, ttl_s: float = 900.0) -> AdapterVersion:
        """Add a version to the desired set under `token` (no routing change), so replicas load it before
        an alias moves to it. Expires after `ttl_s` so a crashed swap cannot pin it forever.

        Raises `ConflictError` for a retired version, `InvalidRequestError` for a bad token."""
        if not token or len(token) > 64:
            raise InvalidRequestError("stage token must be 1-64 characters")
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise InvalidRequestError("ttl_s must be a positive number of seconds")
        with self._write() as (session, state):
            target, _ = self._lookup_ref(state, check_name(name), version_ref)
            if target.status != "active":
                raise ConflictError(
                    not_servable(target), code="adapter_rejected" if target.status == "rejected" else None
                )
            now = utcnow()
            session.execute(delete(StagedVersionRow).where(StagedVersionRow.expires_at <= now))
            row = session.get(StagedVersionRow, token)
            if row is None:
                row = StagedVersionRow(token=token)
                session.add(row)
            row.name, row.version = target.name, target.version
            row.created_at, row.expires_at = now, now + timedelta(seconds=ttl_s)
        return target

    def unstage(self, token: str) -> None:
        """Remove a stage (no-op when it is gone or expired)."""
        with self._write() as (session, state):
            if token not in state.staged:
                raise Unchanged
            session.execute(delete(StagedVersionRow).where(StagedVersionRow.token == token))

    def desired_set(self) -> list[AdapterVersion]:
        """Every version replicas must have loaded: alias targets + arms and shadows of active experiments +
        staged versions, sorted by ref."""
        state = self._fresh()
        wanted: dict[str, AdapterVersion] = {}
        for name, mapping in state.aliases.items():
            for version in mapping.values():
                found = state.find(name, version)
                if found is not None and found.status == "active":
                    wanted[found.ref] = found
        for experiment in state.experiments.values():
            if experiment.is_active:
                for found in experiment.versions():
                    wanted[found.ref] = found
        for name, version in state.staged.values():
            staged = state.find(name, version)
            if staged is not None and staged.status == "active":
                wanted[staged.ref] = staged
        return [wanted[ref] for ref in sorted(wanted)]

    def heartbeat(
        self,
        replica_id: str,
        loaded: Iterable[str],
        generation: int,
        *,
        failed: Mapping[str, str] | None = None,
    ) -> None:
        """Record that `replica_id` serves the `loaded` versions ("name@version") at `generation`, and
        which versions it refused (`failed`: "name@version" -> reason)."""
        if not replica_id or len(replica_id) > 128:
            raise InvalidRequestError("replica_id must be 1-128 characters")
        refs = sorted(set(loaded))
        refused = {str(k): str(v) for k, v in (failed or {}).items()}
        for attempt in range(2):
            try:
                with self.db.session() as session:
                    row = session.get(ReplicaRow, replica_id)
                    if row is None:
                        row = ReplicaRow(replica_id=replica_id)
                        session.add(row)
                    row.loaded, row.generation, row.heartbeat_at, row.failed = (
                        refs,
                        generation,
                        utcnow(),
                        refused,
                    )
                return
            except IntegrityError:
                if attempt == 1:
                    raise

    def live_replicas(self, max_age_s: float = 30.0) -> list[ReplicaStatus]:
        """Replicas that sent a heartbeat in the last `max_age_s` seconds."""
        cutoff = utcnow() - timedelta(seconds=max_age_s)
        with self.db.session() as session:
            rows = session.scalars(
                select(ReplicaRow).where(ReplicaRow.heartbeat_at >= cutoff).order_by(ReplicaRow.replica_id)
            ).all()
            return [
                ReplicaStatus(
                    r.replica_id, tuple(r.loaded), r.generation, r.heartbeat_at, dict(r.failed or {})
                )
                for r in rows
            ]

    def forget_replica(self, replica_id: str) -> None:
        """Delete a replica's heartbeat row (on clean shutdown)."""
        with self.db.session() as session:
            row = session.get(ReplicaRow, replica_id)
            if row is not None:
                session.delete(row)
