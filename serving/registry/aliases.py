"""Aliases of adapter versions (`name@alias`), their history, and rollbacks replayed from it."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.registry.artifacts import check_name
from serving.registry.base import RegistryBase
from serving.registry.errors import AliasNotFoundError, ConflictError, InvalidNameError, ModelNotFoundError
from serving.registry.models import AdapterVersion, AliasEvent, not_servable
from serving.registry.state import RegistryState, Unchanged, event_from_row, load_state
from serving.router import DEFAULT_ALIAS, is_version_prefix
from serving.store import AliasEventRow, AliasRow, utcnow

__all__ = ["CHAMPION", "AliasesMixin", "check_alias", "record_alias"]

log = logging.getLogger("serving.registry.registry")

CHAMPION = DEFAULT_ALIAS
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def check_alias(alias: str) -> str:
    """Return `alias` if valid: 1-32 of a-z 0-9 _ -, starting with a letter, not all-hex (no clash with
    version prefixes)."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias) or is_version_prefix(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-32 characters of a-z, 0-9, '_', '-', starting with a letter and "
            "not made only of hex digits (it would read as a version prefix)"
        )
    return alias


def record_alias(
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
    """Point `name@alias` at `new` (None: delete it) and record the move in the alias history."""
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


class AliasesMixin(RegistryBase):
    """`name@alias` pointers with history: set, delete, roll back."""

    def set_alias(
        self, name: str, alias: str, version_ref: str, *, actor: str = "cli", reason: str = ""
    ) -> AdapterVersion:
        """Point `name@alias` at a version (given as a version prefix or another alias of `name`)."""
        check_name(name)
        check_alias(alias)
        with self._write() as (session, state):
            target, _ = self._lookup_ref(state, name, version_ref)
            if target.status != "active":
                raise ConflictError(
                    not_servable(target), code="adapter_rejected" if target.status == "rejected" else None
                )
            old = state.aliases.get(name, {}).get(alias)
            if old == target.version:
                raise Unchanged
            record_alias(session, name, alias, old, target.version, kind="set", actor=actor, reason=reason)
        return self.get(name, target.version)

    def delete_alias(self, name: str, alias: str, *, actor: str = "cli", reason: str = "") -> None:
        """Remove `name@alias` (recorded in the history, so `rollback` can restore it)."""
        check_name(name)
        with self._write() as (session, state):
            old = state.aliases.get(name, {}).get(alias)
            if old is None:
                raise AliasNotFoundError(f"adapter {name!r} has no alias {alias!r}")
            record_alias(session, name, alias, old, None, kind="delete", actor=actor, reason=reason)

    def _rollback_plan(
        self, session: Session, state: RegistryState, name: str, alias: str
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
            state = load_state(session)
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
            record_alias(session, name, alias, current, target, kind="rollback", actor=actor, reason=reason)
        log.info("rolled back %s@%s to %s", name, alias, target[:12])
        return self.get(name, target)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Alias moves of `name` (optionally one alias), oldest first."""
        query = select(AliasEventRow).where(AliasEventRow.name == check_name(name))
        if alias is not None:
            query = query.where(AliasEventRow.alias == alias)
        with self.db.session() as session:
            return [event_from_row(row) for row in session.scalars(query.order_by(AliasEventRow.id))]
