"""The versioned adapter registry: versions, aliases (with history), experiments, model-name resolution,
the desired adapter set replicas reconcile to, and replica heartbeats.

Model names are resolved by the router's one resolver (`serving.router`, rules there) on a snapshot of
the registry state (`serving.registry.resolution`): `resolve(model)` says what a request's `model`
means now (an active experiment, or one it intercepts -> kind 'experiment'; the router picks an arm);
unknown names raise the `ModelNotFoundError` family, a too-short version prefix `InvalidNameError`, an
ambiguous one `AmbiguousVersionError`. Requests never call it: replicas route on their own snapshot.

Consistency: every write runs in one transaction that first bumps `registry_state.generation` (which
also serializes registry writers on SQLite and Postgres), then re-reads the state and applies the
change. Reads load the current state (one small query per table).
"""

from __future__ import annotations

import builtins
import logging
import math
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.registry.artifacts import ArtifactStore, check_name
from serving.registry.errors import (
    AliasNotFoundError,
    ConflictError,
    ExperimentNotFoundError,
    InvalidNameError,
    InvalidRequestError,
    ModelNotFoundError,
    RegistryError,
)
from serving.registry.models import (
    AdapterVersion,
    AliasEvent,
    Experiment,
    ExperimentArm,
    ReplicaStatus,
    ResolvedModel,
)
from serving.registry.resolution import miss_error, routing_snapshot
from serving.registry.validation import (
    DEFAULT_MAX_ADAPTER_BYTES,
    BaseModelSpec,
    ValidationReport,
    validate_adapter,
)
from serving.router import DEFAULT_ALIAS, Miss, RoutingSnapshot, VersionRef, base_names, is_version_prefix
from serving.store import (
    REGISTRY_STATE_ID,
    AdapterVersionRow,
    AliasEventRow,
    AliasRow,
    Database,
    ExperimentRow,
    RegistryStateRow,
    ReplicaRow,
    StagedVersionRow,
    utcnow,
)

__all__ = ["CHAMPION", "AdapterRegistry", "ArmSpec", "check_alias"]

log = logging.getLogger(__name__)

CHAMPION = DEFAULT_ALIAS
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

ArmSpec = tuple[str, float] | Mapping[str, Any]
"""An experiment arm as given: `(model, weight)` or `{"model": ..., "weight": ...}`."""


def check_alias(alias: str) -> str:
    """Return `alias` if valid: 1-32 of a-z 0-9 _ -, starting with a letter, not all-hex (no clash with
    version prefixes)."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias) or is_version_prefix(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-32 characters of a-z, 0-9, '_', '-', starting with a letter and "
            "not made only of hex digits (it would read as a version prefix)"
        )
    return alias


def _version_from_row(row: AdapterVersionRow, aliases: Iterable[str] = ()) -> AdapterVersion:
    return AdapterVersion(
        name=row.name,
        version=row.version,
        base_model=row.base_model,
        base_fingerprint=row.base_fingerprint,
        rank=row.rank,
        alpha=row.alpha,
        target_modules=tuple(row.target_modules or ()),
        size_bytes=row.size_bytes,
        uri=row.uri,
        parent=row.parent,
        dataset_hash=row.dataset_hash,
        training_config=row.training_config,
        eval_results=row.eval_results,
        metadata=row.metadata_,
        status=cast(Literal["active", "retired"], row.status),
        created_at=row.created_at,
        aliases=tuple(sorted(aliases)),
    )


def _event_from_row(row: AliasEventRow) -> AliasEvent:
    return AliasEvent(
        row.id, row.name, row.alias, row.from_version, row.to_version, row.kind, row.actor, row.reason, row.at
    )


class _Unchanged(Exception):
    """Raised inside a write transaction that turns out to change nothing (rolls it back)."""


@dataclass(frozen=True, slots=True)
class _State:
    """All registry metadata at one generation (small: tens to hundreds of versions)."""

    generation: int
    versions: dict[str, tuple[AdapterVersion, ...]]  # name -> versions, newest first (all statuses)
    aliases: dict[str, dict[str, str]]  # name -> alias -> version
    experiments: dict[str, Experiment]  # all statuses
    staged: dict[str, tuple[str, str]]  # token -> (name, version), unexpired only

    def find(self, name: str, version: str) -> AdapterVersion | None:
        return next((v for v in self.versions.get(name, ()) if v.version == version), None)


class AdapterRegistry:
    """Adapter versions, aliases and experiments in the database; artifacts in an `ArtifactStore`."""

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
    ) -> None:
        """`base_aliases`: extra model names that mean the base besides `serving.router.base_names`
        (e.g. the local folder's name). `snapshot_ttl_s` is ignored (reads always see the current state;
        kept so existing callers need no change)."""
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
        )

    # ================================================================== state loading

    def _load_state(self, session: Session) -> _State:
        generation = session.scalar(
            select(RegistryStateRow.generation).where(RegistryStateRow.id == REGISTRY_STATE_ID)
        )
        aliases: dict[str, dict[str, str]] = {}
        for alias_row in session.scalars(select(AliasRow)):
            aliases.setdefault(alias_row.name, {})[alias_row.alias] = alias_row.version
        by_version: dict[tuple[str, str], list[str]] = {}
        for name, mapping in aliases.items():
            for alias, version in mapping.items():
                by_version.setdefault((name, version), []).append(alias)
        versions: dict[str, list[AdapterVersion]] = {}
        rows = session.scalars(
            select(AdapterVersionRow).order_by(AdapterVersionRow.name, AdapterVersionRow.created_at.desc())
        )
        for row in rows:
            versions.setdefault(row.name, []).append(
                _version_from_row(row, by_version.get((row.name, row.version), ()))
            )
        frozen = {name: tuple(items) for name, items in versions.items()}
        experiments = {}
        for exp_row in session.scalars(select(ExperimentRow)):
            experiments[exp_row.name] = self._experiment_from_row(exp_row, frozen)
        now = utcnow()
        staged = {
            row.token: (row.name, row.version)
            for row in session.scalars(select(StagedVersionRow))
            if row.expires_at > now
        }
        return _State(int(generation or 0), frozen, aliases, experiments, staged)

    def _experiment_from_row(
        self, row: ExperimentRow, versions: dict[str, tuple[AdapterVersion, ...]]
    ) -> Experiment:
        def arm(model: str, weight: float, target: str) -> ExperimentArm:
            if "@" not in target:
                return ExperimentArm(model=model, weight=weight, name=target, version=None)
            name, version = target.split("@", 1)
            found = next((v for v in versions.get(name, ()) if v.version == version), None)
            if found is None:
                raise RegistryError(f"experiment {row.name!r} pins {target!r}, which is not in the registry")
            return ExperimentArm(model=model, weight=weight, name=name, version=found)

        arms = tuple(arm(str(a["model"]), float(a["weight"]), str(a["target"])) for a in row.arms)
        shadow = arm(row.shadow, 0.0, row.shadow) if row.shadow else None
        return Experiment(
            name=row.name,
            arms=arms,
            shadow=shadow,
            status=cast(Literal["active", "stopped"], row.status),
            created_at=row.created_at,
            stopped_at=row.stopped_at,
            description=row.description,
            intercept=row.intercept,
        )

    def _fresh(self) -> _State:
        with self.db.session() as session:
            return self._load_state(session)

    @contextmanager
    def _write(self) -> Iterator[tuple[Session, _State]]:
        """A write transaction: bump the generation first (serializes writers), then read the state.

        The body raises `_Unchanged` when there is nothing to do: the transaction (and the bump) is then
        rolled back and the `with` block ends quietly."""
        try:
            with self.db.session() as session:
                session.execute(
                    update(RegistryStateRow)
                    .where(RegistryStateRow.id == REGISTRY_STATE_ID)
                    .values(generation=RegistryStateRow.generation + 1, updated_at=utcnow())
                )
                yield session, self._load_state(session)
        except _Unchanged:
            pass

    # ================================================================== helpers

    def _is_base(self, model: str) -> bool:
        return model in self._base_names

    def _routing(self, state: _State, *, include_retired: bool = False) -> RoutingSnapshot:
        """`state` as a routing snapshot: active versions (or all), all aliases, active experiments."""
        return routing_snapshot(
            self.base_model_id,
            self.base_aliases,
            (v for vs in state.versions.values() for v in vs if include_retired or v.status == "active"),
            state.aliases,
            state.experiments.values(),
            generation=state.generation,
        )

    def _lookup_ref(self, state: _State, name: str, ref: str) -> tuple[AdapterVersion, str | None]:
        """`ref` is an alias of `name` or a version prefix (any status); returns (version, alias or None)."""
        check_name(name)
        found = self._routing(state, include_retired=True).lookup(f"{name}@{ref}")
        if isinstance(found, Miss):
            raise miss_error(found, by_ref=True)
        return self._version_of(state, found.version), found.alias

    @staticmethod
    def _version_of(state: _State, ref: VersionRef | None) -> AdapterVersion:
        assert ref is not None
        version = state.find(ref.name, ref.version)
        assert version is not None
        return version

    def _resolve_in(self, state: _State, model: str, *, allow_experiment: bool = True) -> ResolvedModel:
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

    def _check_free_name(self, state: _State, name: str, *, for_what: str) -> None:
        if self._is_base(name):
            raise ConflictError(f"{for_what} name {name!r} is the base model's name")
        if name in state.experiments:
            raise ConflictError(f"{for_what} name {name!r} is already an experiment's name")

    def _canonical_parent(self, state: _State, parent: str | None) -> str | None:
        if parent is None:
            return None
        if self._is_base(parent):
            return self.base_model_id
        if "@" in parent:
            name, ref = parent.split("@", 1)
            if name not in state.versions:
                raise ModelNotFoundError(f"parent {parent!r}: no adapter named {name!r}")
            return self._lookup_ref(state, name, ref)[0].ref
        return self._resolve_in(state, parent, allow_experiment=False).version.ref  # type: ignore[union-attr]

    @staticmethod
    def _record_alias(
        session: Session,
        name: str,
        alias: str,
        old: str | None,
        new: str | None,
        *,
        kind: str,
        actor: str,
        reason: str,
    ) -> None:
        now = utcnow()
        row = session.get(AliasRow, (name, alias))
        if new is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(AliasRow(name=name, alias=alias, version=new, updated_at=now))
        else:
            row.version, row.updated_at = new, now
        session.add(
            AliasEventRow(
                name=name,
                alias=alias,
                from_version=old,
                to_version=new,
                kind=kind,
                actor=actor,
                reason=reason,
                at=now,
            )
        )

    # ================================================================== versions

    def validate(self, folder: str | Path, *, base_fingerprint: str | None = None) -> ValidationReport:
        """Static validation only (nothing stored). Raises `AdapterValidationError`."""
        return validate_adapter(folder, self.spec, adapter_fingerprint=base_fingerprint)

    def register(
        self,
        folder: str | Path,
        name: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        parent: str | None = None,
        dataset_hash: str | None = None,
        training_config: Mapping[str, Any] | None = None,
        eval_results: Mapping[str, Any] | None = None,
        alias: str | None = None,
        actor: str = "cli",
        base_fingerprint: str | None = None,
    ) -> AdapterVersion:
        """Validate, store and record an adapter folder as a version of `name` (idempotent for identical
        weights; a retired version is re-activated). Optionally point `alias` at it.

        Raises `InvalidNameError`, `AdapterValidationError` (nothing stored), `ConflictError` (name taken
        by the base or an experiment), `ModelNotFoundError` (unknown parent)."""
        check_name(name)
        if alias is not None:
            check_alias(alias)
        state = self._fresh()
        self._check_free_name(state, name, for_what="adapter")
        report = self.validate(folder, base_fingerprint=base_fingerprint)
        version = report.sha256
        existing = state.find(name, version)
        if existing is not None and existing.status == "active":
            if alias is not None and state.aliases.get(name, {}).get(alias) != version:
                self.set_alias(name, alias, version, actor=actor, reason="registered")
            return self.get(name, version)
        parent_ref = self._canonical_parent(state, parent)
        created = not self.artifacts.exists(name, version)
        uri = self.artifacts.put_version(name, version, folder)
        try:
            with self._write() as (session, state):
                self._check_free_name(state, name, for_what="adapter")
                row = session.get(AdapterVersionRow, (name, version))
                if row is None:
                    session.add(
                        AdapterVersionRow(
                            name=name,
                            version=version,
                            base_model=self.base_model_id,
                            base_fingerprint=base_fingerprint or self.spec.fingerprint,
                            rank=report.rank,
                            alpha=report.alpha,
                            target_modules=list(report.target_modules),
                            size_bytes=report.size_bytes,
                            uri=uri,
                            parent=parent_ref,
                            dataset_hash=dataset_hash,
                            training_config=dict(training_config) if training_config is not None else None,
                            eval_results=dict(eval_results) if eval_results is not None else None,
                            metadata_=dict(metadata) if metadata is not None else None,
                            status="active",
                            created_at=utcnow(),
                        )
                    )
                elif row.status != "active":
                    row.status, row.uri = "active", uri
                elif alias is None or state.aliases.get(name, {}).get(alias) == version:
                    raise _Unchanged  # a concurrent registration of the same weights won the race
                session.flush()
                if alias is not None:
                    old = state.aliases.get(name, {}).get(alias)
                    if old != version:
                        self._record_alias(
                            session, name, alias, old, version, kind="set", actor=actor, reason="registered"
                        )
        except BaseException:
            if created:
                try:
                    self.artifacts.delete_version(name, version)
                except Exception:  # noqa: BLE001 - keep the original error; the orphan is only disk space
                    log.exception(
                        "could not remove artifacts of %s@%s after a failed registration", name, version
                    )
            raise
        log.info("registered adapter %s@%s", name, version[:12])
        return self.get(name, version)

    def get(self, name: str, version_prefix: str) -> AdapterVersion:
        """One version (any status) by a unique version prefix (>= 6 hex chars) or an alias."""
        state = self._fresh()
        return self._lookup_ref(state, check_name(name), version_prefix)[0]

    def local_path(self, version: AdapterVersion) -> Path:
        """A local folder with the version's files (downloaded into the cache for remote stores)."""
        return self.artifacts.local_path(version.uri)

    def update_metadata(
        self,
        name: str,
        version_ref: str,
        *,
        eval_results: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        replace_existing: bool = False,
    ) -> AdapterVersion:
        """Merge (or with `replace_existing`, replace) `eval_results` / `metadata` of a version."""
        with self._write() as (session, state):
            found, _ = self._lookup_ref(state, check_name(name), version_ref)
            row = session.get(AdapterVersionRow, (found.name, found.version))
            assert row is not None
            if eval_results is None and metadata is None:
                raise _Unchanged
            if eval_results is not None:
                base = {} if replace_existing else dict(row.eval_results or {})
                row.eval_results = {**base, **eval_results}
            if metadata is not None:
                base = {} if replace_existing else dict(row.metadata_ or {})
                row.metadata_ = {**base, **metadata}
        return self.get(found.name, found.version)

    def remove(self, name: str, version_ref: str, *, delete_artifacts: bool = True) -> AdapterVersion:
        """Retire a version (its row stays for lineage) and delete its artifacts.

        Raises `ConflictError` while an alias points at it or an active experiment uses it."""
        with self._write() as (session, state):
            found, _ = self._lookup_ref(state, check_name(name), version_ref)
            aliases = sorted(a for a, v in state.aliases.get(found.name, {}).items() if v == found.version)
            if aliases:
                raise ConflictError(
                    f"cannot remove {found.short_ref}: aliases {aliases} point at it; "
                    "move or delete them first"
                )
            users = sorted(
                e.name
                for e in state.experiments.values()
                if e.is_active and found.ref in {v.ref for v in e.versions()}
            )
            if users:
                raise ConflictError(f"cannot remove {found.short_ref}: active experiments {users} use it")
            if (found.name, found.version) in state.staged.values():
                raise ConflictError(f"cannot remove {found.short_ref}: a hot-swap has staged it")
            row = session.get(AdapterVersionRow, (found.name, found.version))
            assert row is not None
            if row.status == "retired":
                raise _Unchanged
            row.status = "retired"
        if delete_artifacts:
            try:
                self.artifacts.delete_version(found.name, found.version)
            except Exception:  # noqa: BLE001 - the version is retired either way; report the leftover
                log.exception("retired %s but could not delete its artifacts", found.short_ref)
        return replace(found, status="retired", aliases=())

    # ================================================================== aliases

    def set_alias(
        self, name: str, alias: str, version_ref: str, *, actor: str = "cli", reason: str = ""
    ) -> AdapterVersion:
        """Point `name@alias` at a version (given as a version prefix or another alias of `name`)."""
        check_name(name)
        check_alias(alias)
        with self._write() as (session, state):
            target, _ = self._lookup_ref(state, name, version_ref)
            if target.status != "active":
                raise ConflictError(f"{target.short_ref} is retired; register it again to use it")
            old = state.aliases.get(name, {}).get(alias)
            if old == target.version:
                raise _Unchanged
            self._record_alias(
                session, name, alias, old, target.version, kind="set", actor=actor, reason=reason
            )
        return self.get(name, target.version)

    def delete_alias(self, name: str, alias: str, *, actor: str = "cli", reason: str = "") -> None:
        """Remove `name@alias` (recorded in the history, so `rollback` can restore it)."""
        check_name(name)
        with self._write() as (session, state):
            old = state.aliases.get(name, {}).get(alias)
            if old is None:
                raise AliasNotFoundError(f"adapter {name!r} has no alias {alias!r}")
            self._record_alias(session, name, alias, old, None, kind="delete", actor=actor, reason=reason)

    def _rollback_plan(
        self, session: Session, state: _State, name: str, alias: str
    ) -> tuple[str | None, str]:
        """(current version, version a rollback moves to) from the alias history, replayed as a stack."""
        events = session.scalars(
            select(AliasEventRow)
            .where(AliasEventRow.name == name, AliasEventRow.alias == alias)
            .order_by(AliasEventRow.id)
        ).all()
        if not events and name not in state.versions:
            raise ModelNotFoundError(f"no adapter named {name!r}")
        stack: list[str] = []
        for ev in events:
            if ev.kind == "rollback":
                if stack:
                    stack.pop()
            elif ev.from_version is not None:
                stack.append(ev.from_version)
        current = state.aliases.get(name, {}).get(alias)
        while stack:
            candidate = state.find(name, stack[-1])
            if candidate is not None and candidate.status == "active" and candidate.version != current:
                return current, candidate.version
            stack.pop()
        raise ConflictError(f"{name}@{alias} has no earlier version to roll back to")

    def rollback_target(self, name: str, alias: str = CHAMPION) -> AdapterVersion:
        """The version `rollback(name, alias)` would move the alias to now (nothing changes).

        Raises `ConflictError` when there is nothing to go back to."""
        check_name(name)
        check_alias(alias)
        with self.db.session() as session:
            state = self._load_state(session)
            _, target = self._rollback_plan(session, state, name, alias)
        found = state.find(name, target)
        assert found is not None
        return found

    def rollback(
        self, name: str, alias: str = CHAMPION, *, actor: str = "cli", reason: str = "rollback"
    ) -> AdapterVersion:
        """Move `name@alias` back to the version it pointed at before its latest move.

        Rollbacks undo moves like a stack: after A -> B -> C, rollback gives B, a second rollback gives A;
        a deleted alias is restored. Retired versions are skipped. Raises `ConflictError` when there is
        nothing to go back to."""
        check_name(name)
        check_alias(alias)
        with self._write() as (session, state):
            current, target = self._rollback_plan(session, state, name, alias)
            self._record_alias(
                session, name, alias, current, target, kind="rollback", actor=actor, reason=reason
            )
        log.info("rolled back %s@%s to %s", name, alias, target[:12])
        return self.get(name, target)

    # ================================================================== staging (hot-swap)

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
                raise ConflictError(f"{target.short_ref} is retired; register it again to use it")
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
                raise _Unchanged
            session.execute(delete(StagedVersionRow).where(StagedVersionRow.token == token))

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasEvent]:
        """Alias moves of `name` (optionally one alias), oldest first."""
        query = select(AliasEventRow).where(AliasEventRow.name == check_name(name))
        if alias is not None:
            query = query.where(AliasEventRow.alias == alias)
        with self.db.session() as session:
            return [_event_from_row(row) for row in session.scalars(query.order_by(AliasEventRow.id))]

    def lineage(self, name: str, version_ref: str) -> builtins.list[AdapterVersion]:
        """The version and its ancestors (following `parent`), newest first; stops at the base model."""
        state = self._fresh()
        chain = [self._lookup_ref(state, check_name(name), version_ref)[0]]
        seen = {chain[0].ref}
        while (parent := chain[-1].parent) is not None and "@" in parent and parent not in seen:
            pname, pversion = parent.split("@", 1)
            found = state.find(pname, pversion)
            if found is None:
                break
            chain.append(found)
            seen.add(found.ref)
        return chain

    # ================================================================== resolution

    def resolve(self, model: str) -> ResolvedModel:
        """What a request's `model` string means now (rules: `serving.router`), on the current state.

        Raises `ModelNotFoundError` (and its subclasses `AliasNotFoundError`, `VersionNotFoundError`,
        `ExperimentNotFoundError`), `AmbiguousVersionError`, `InvalidNameError`."""
        return self._resolve_in(self._fresh(), model)

    # ================================================================== experiments

    def _arm(self, state: _State, spec: ArmSpec, index: int) -> ExperimentArm:
        if isinstance(spec, Mapping):
            model, weight = spec.get("model"), spec.get("weight", 1.0)
        else:
            try:
                model, weight = spec
            except (TypeError, ValueError) as exc:
                raise InvalidRequestError(f"arm #{index} must be (model, weight)") from exc
        if not isinstance(model, str) or not model:
            raise InvalidRequestError(f"arm #{index} has no model")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise InvalidRequestError(
                f"arm {model!r} has weight {weight!r}; weights must be finite numbers > 0"
            )
        resolved = self._resolve_in(state, model, allow_experiment=False)
        return ExperimentArm(model=model, weight=float(weight), name=resolved.name, version=resolved.version)

    def create_experiment(
        self,
        name: str,
        arms: Sequence[ArmSpec],
        shadow: str | None = None,
        description: str = "",
        intercept: str | None = None,
    ) -> Experiment:
        """Start an A/B experiment served under `name`. Each arm's model (base, `adapter`, `adapter@alias`,
        `adapter@<version>`) is pinned to its current version now, so aliases moving later do not change a
        running experiment. Needs >= 2 arms, or 1 arm plus a `shadow`.

        Raises `InvalidNameError`, `InvalidRequestError` (bad arms), `ModelNotFoundError` family (arm does
        not resolve), `ConflictError` (name taken)."""
        check_name(name, "experiment name")
        if len(arms) < 1 or (len(arms) < 2 and shadow is None):
            raise InvalidRequestError("an experiment needs at least 2 arms, or 1 arm and a shadow model")
        with self._write() as (session, state):
            if self._is_base(name) or name in state.versions:
                raise ConflictError(f"experiment name {name!r} is already a model name")
            if name in state.experiments:
                raise ConflictError(
                    f"an experiment named {name!r} already exists ({state.experiments[name].status})"
                )
            if intercept is not None:
                taken = [
                    e.name for e in state.experiments.values() if e.is_active and e.intercept == intercept
                ]
                if taken:
                    raise ConflictError(f"{intercept!r} is already intercepted by experiment {taken[0]!r}")
                self._resolve_in(state, intercept, allow_experiment=False)
            pinned = [self._arm(state, spec, i) for i, spec in enumerate(arms)]
            targets = [a.target for a in pinned]
            if len(set(targets)) != len(targets):
                raise InvalidRequestError(f"two arms serve the same model version: {targets}")
            shadow_arm = None
            if shadow is not None:
                shadow_arm = self._arm(state, (shadow, 1.0), len(arms))
                if shadow_arm.target in targets:
                    raise InvalidRequestError(
                        f"the shadow {shadow!r} is also an arm; shadow a model not in the arms"
                    )
            session.add(
                ExperimentRow(
                    name=name,
                    arms=[a.to_dict() for a in pinned],
                    shadow=shadow_arm.target if shadow_arm is not None else None,
                    status="active",
                    created_at=utcnow(),
                    stopped_at=None,
                    description=description,
                    intercept=intercept,
                )
            )
        return self.get_experiment(name)

    def get_experiment(self, name: str) -> Experiment:
        """An experiment (any status). Raises `ExperimentNotFoundError`."""
        experiment = self._fresh().experiments.get(name)
        if experiment is None:
            raise ExperimentNotFoundError(f"no experiment named {name!r}")
        return experiment

    def list_experiments(self, *, active_only: bool = False) -> builtins.list[Experiment]:
        experiments = sorted(self._fresh().experiments.values(), key=lambda e: e.created_at)
        return [e for e in experiments if e.is_active or not active_only]

    def stop_experiment(self, name: str) -> Experiment:
        """Stop an experiment (idempotent); its name then no longer resolves."""
        with self._write() as (session, state):
            if name not in state.experiments:
                raise ExperimentNotFoundError(f"no experiment named {name!r}")
            row = session.get(ExperimentRow, name)
            assert row is not None
            if row.status != "active":
                raise _Unchanged
            row.status, row.stopped_at = "stopped", utcnow()
        return self.get_experiment(name)

    # ================================================================== replicas

    def desired_set(self) -> builtins.list[AdapterVersion]:
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

    def generation(self) -> int:
        """The registry generation: changes whenever versions, aliases or experiments change."""
        with self.db.session() as session:
            value = session.scalar(
                select(RegistryStateRow.generation).where(RegistryStateRow.id == REGISTRY_STATE_ID)
            )
        return int(value or 0)

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

    def live_replicas(self, max_age_s: float = 30.0) -> builtins.list[ReplicaStatus]:
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

    # ================================================================== listing

    def list(
        self, name: str | None = None, *, include_retired: bool = False
    ) -> builtins.list[AdapterVersion]:
        """Versions (of `name`, or all), by name then newest first; active only unless `include_retired`."""
        state = self._fresh()
        if name is not None:
            check_name(name)
        names = [name] if name is not None else sorted(state.versions)
        return [
            v for n in names for v in state.versions.get(n, ()) if include_retired or v.status == "active"
        ]
