"""The registry state and the one transaction helper every registry write goes through.

`load_state` reads all registry metadata at once (small: tens to hundreds of versions); `write_state`
is a write transaction that first bumps `registry_state.generation` (which also serializes registry
writers on SQLite and Postgres), then reads the state for the body to check and change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from serving.registry.errors import RegistryError
from serving.registry.models import AdapterVersion, AliasEvent, Experiment, ExperimentArm, VersionStatus
from serving.store import (
    REGISTRY_STATE_ID,
    AdapterVersionRow,
    AliasEventRow,
    AliasRow,
    Database,
    ExperimentRow,
    RegistryStateRow,
    StagedVersionRow,
    utcnow,
)

__all__ = [
    "RegistryState",
    "Unchanged",
    "event_from_row",
    "experiment_from_row",
    "load_state",
    "read_generation",
    "read_state",
    "version_from_row",
    "write_state",
]


class Unchanged(Exception):
    """Raised inside a write transaction that turns out to change nothing (rolls it back)."""


@dataclass(frozen=True, slots=True)
class RegistryState:
    """All registry metadata at one generation (small: tens to hundreds of versions)."""

    generation: int
    versions: dict[str, tuple[AdapterVersion, ...]]  # name -> versions, newest first (all statuses)
    aliases: dict[str, dict[str, str]]  # name -> alias -> version
    experiments: dict[str, Experiment]  # all statuses
    staged: dict[str, tuple[str, str]]  # token -> (name, version), unexpired only

    def find(self, name: str, version: str) -> AdapterVersion | None:
        return next((v for v in self.versions.get(name, ()) if v.version == version), None)


def version_from_row(row: AdapterVersionRow, aliases: Iterable[str] = ()) -> AdapterVersion:
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
        status=cast(VersionStatus, row.status),
        created_at=row.created_at,
        aliases=tuple(sorted(aliases)),
    )


def event_from_row(row: AliasEventRow) -> AliasEvent:
    return AliasEvent(
        row.id, row.name, row.alias, row.from_version, row.to_version, row.kind, row.actor, row.reason, row.at
    )


def experiment_from_row(row: ExperimentRow, versions: dict[str, tuple[AdapterVersion, ...]]) -> Experiment:
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


def load_state(session: Session) -> RegistryState:
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
            version_from_row(row, by_version.get((row.name, row.version), ()))
        )
    frozen = {name: tuple(items) for name, items in versions.items()}
    experiments = {}
    for exp_row in session.scalars(select(ExperimentRow)):
        experiments[exp_row.name] = experiment_from_row(exp_row, frozen)
    now = utcnow()
    staged = {
        row.token: (row.name, row.version)
        for row in session.scalars(select(StagedVersionRow))
        if row.expires_at > now
    }
    return RegistryState(int(generation or 0), frozen, aliases, experiments, staged)


def read_state(db: Database) -> RegistryState:
    """The current state (one read transaction)."""
    with db.session() as session:
        return load_state(session)


def read_generation(db: Database) -> int:
    """The registry generation: changes whenever versions, aliases, experiments or stages change."""
    with db.session() as session:
        value = session.scalar(
            select(RegistryStateRow.generation).where(RegistryStateRow.id == REGISTRY_STATE_ID)
        )
    return int(value or 0)


@contextmanager
def write_state(db: Database) -> Iterator[tuple[Session, RegistryState]]:
    """A write transaction: bump the generation first (serializes writers), then read the state.

    The body raises `Unchanged` when there is nothing to do: the transaction (and the bump) is then
    rolled back and the `with` block ends quietly."""
    try:
        with db.session() as session:
            session.execute(
                update(RegistryStateRow)
                .where(RegistryStateRow.id == REGISTRY_STATE_ID)
                .values(generation=RegistryStateRow.generation + 1, updated_at=utcnow())
            )
            yield session, load_state(session)
    except Unchanged:
        pass
