"""Adapter versions: validation, registration (content-addressed, idempotent), metadata, retirement,
rejection (a version whose first load failed), listing and lineage."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from common.manifest import dataset_hash, load_manifest, parent_sha256
from common.manifest import training_config as manifest_config
from serving.registry.aliases import AliasesMixin, check_alias, record_alias
from serving.registry.artifacts import check_name
from serving.registry.errors import AdapterValidationError, ConflictError, ModelNotFoundError
from serving.registry.models import REJECTION_KEY, AdapterVersion, not_servable
from serving.registry.state import RegistryState, Unchanged
from serving.registry.validation import ValidationReport, validate_adapter
from serving.store import AdapterVersionRow, StagedVersionRow, utcnow

__all__ = ["VersionsMixin"]

log = logging.getLogger("serving.registry.registry")


class VersionsMixin(AliasesMixin):
    """Versions of adapters (registering one may also point an alias at it)."""

    def _check_free_name(self, state: RegistryState, name: str, *, for_what: str) -> None:
        if self._is_base(name):
            raise ConflictError(f"{for_what} name {name!r} is the base model's name")
        if name in state.experiments:
            raise ConflictError(f"{for_what} name {name!r} is already an experiment's name")

    def _canonical_parent(self, state: RegistryState, parent: str | None) -> str | None:
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

    def validate(self, folder: str | Path, *, base_fingerprint: str | None = None) -> ValidationReport:
        """Static validation only (nothing stored). Raises `AdapterValidationError`."""
        return validate_adapter(folder, self.spec, adapter_fingerprint=base_fingerprint)

    def register_trained(
        self,
        folder: str | Path,
        name: str,
        *,
        parent: str | None = None,
        training_config: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        alias: str | None = None,
        actor: str = "cli",
    ) -> AdapterVersion:
        """Register a trained adapter folder with the lineage its training manifest records (the one way a
        training result becomes a version: `tuneloop train --register`, `adapters register`, the loop, the
        demo). The manifest gives the dataset hash, the training config (unless `training_config` is given)
        and the parent (unless `parent` is given: the registered version whose weights training started
        from, when there is one); `metadata` is stored next to the manifest. A folder without a manifest
        registers like `register`."""
        manifest = load_manifest(folder)
        if parent is None and (sha := parent_sha256(manifest)) is not None:
            parent = next((v.ref for v in self.list(include_retired=True) if v.version == sha), None)
        return self.register(
            folder,
            name,
            parent=parent,
            metadata={**({"manifest": manifest} if manifest else {}), **(metadata or {})},
            dataset_hash=dataset_hash(manifest),
            training_config=training_config if training_config is not None else manifest_config(manifest),
            alias=alias,
            actor=actor,
        )

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

        Raises `InvalidNameError`, `AdapterValidationError` (nothing stored; code `rejected` for weights
        a replica already refused to load), `ConflictError` (name taken by the base or an experiment),
        `ModelNotFoundError` (unknown parent)."""
        check_name(name)
        if alias is not None:
            check_alias(alias)
        state = self._fresh()
        self._check_free_name(state, name, for_what="adapter")
        report = self.validate(folder, base_fingerprint=base_fingerprint)
        version = report.sha256
        existing = state.find(name, version)
        if existing is not None and existing.status == "rejected":
            raise AdapterValidationError(not_servable(existing), code="rejected", path=str(folder))
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
                elif row.status == "rejected":
                    raise AdapterValidationError(
                        f"{name}@{version[:12]} was rejected meanwhile", code="rejected", path=str(folder)
                    )
                elif row.status != "active":
                    row.status, row.uri = "active", uri
                elif alias is None or state.aliases.get(name, {}).get(alias) == version:
                    raise Unchanged  # a concurrent registration of the same weights won the race
                session.flush()
                if alias is not None:
                    old = state.aliases.get(name, {}).get(alias)
                    if old != version:
                        record_alias(
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
                raise Unchanged
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
                raise Unchanged
            row.status = "retired"
        if delete_artifacts:
            try:
                self.artifacts.delete_version(found.name, found.version)
            except Exception:  # noqa: BLE001 - the version is retired either way; report the leftover
                log.exception("retired %s but could not delete its artifacts", found.short_ref)
        return replace(found, status="retired", aliases=())

    def reject(
        self, name: str, version: str, reason: str, *, replica: str | None = None
    ) -> AdapterVersion | None:
        """Mark an active version `rejected` (its first load or smoke generation failed): it leaves every
        replica's routing and the desired set, stages of it are dropped, and registering the same
        weights again is refused. Idempotent: the first rejection's reason is kept (and nothing is
        written). Returns the rejected version, None when it is not in the registry or is retired."""
        with self._write() as (session, state):
            found = state.find(check_name(name), version)
            if found is None or found.status != "active":
                raise Unchanged
            row = session.get(AdapterVersionRow, (found.name, found.version))
            assert row is not None
            row.status = "rejected"
            row.metadata_ = {
                **dict(row.metadata_ or {}),
                REJECTION_KEY: {"reason": reason[:2000], "replica": replica, "at": utcnow().isoformat()},
            }
            session.execute(
                delete(StagedVersionRow).where(
                    StagedVersionRow.name == found.name, StagedVersionRow.version == found.version
                )
            )
            log.error("adapter %s rejected (replica %s): %s", found.short_ref, replica, reason)
        current = self._fresh().find(name, version)
        return current if current is not None and current.status == "rejected" else None

    def list(
        self, name: str | None = None, *, include_retired: bool = False
    ) -> builtins.list[AdapterVersion]:
        """Versions (of `name`, or all), by name then newest first; active only unless `include_retired`
        (then retired and rejected ones too)."""
        state = self._fresh()
        if name is not None:
            check_name(name)
        names = [name] if name is not None else sorted(state.versions)
        return [
            v for n in names for v in state.versions.get(n, ()) if include_retired or v.status == "active"
        ]

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
