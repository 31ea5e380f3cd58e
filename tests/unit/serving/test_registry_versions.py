"""AdapterRegistry versions: registration (atomic, idempotent), get by prefix, metadata, remove, aliases,
rollback history, lineage, generation, on SQLite with local and `memory://` artifact stores."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event

import serving.registry.artifacts as artifacts_module
from serving.api.errors import registry_status
from serving.registry import (
    AdapterRegistry,
    AdapterValidationError,
    AliasNotFoundError,
    AmbiguousVersionError,
    ConflictError,
    InvalidNameError,
    ModelNotFoundError,
    VersionNotFoundError,
    sha256_file,
)
from serving.registry.testing import SMOLLM2_BASE as BASE
from serving.store import AdapterVersionRow


def test_register_stores_artifacts_and_metadata(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    folder = new_adapter(1, r=8, alpha=16)
    version = registry.register(
        folder,
        "support",
        metadata={"owner": "team-a"},
        dataset_hash="d" * 64,
        training_config={"lr": 2e-4},
        eval_results={"rouge": 0.5},
        alias="challenger",
        actor="trainer",
    )
    assert version.version == sha256_file(folder / "adapter_model.safetensors")
    assert (version.name, version.rank, version.alpha, version.status) == ("support", 8, 16.0, "active")
    assert version.base_model == BASE and version.target_modules == ("q_proj", "v_proj")
    assert version.metadata == {"owner": "team-a"} and version.training_config == {"lr": 2e-4}
    assert version.aliases == ("challenger",)
    assert version.created_at.tzinfo is not None
    local = registry.local_path(version)
    assert sha256_file(local / "adapter_model.safetensors") == version.version
    assert registry.resolve("support@challenger").version == version
    event = registry.alias_history("support")[0]
    assert (event.alias, event.from_version, event.to_version, event.actor) == (
        "challenger",
        None,
        version.version,
        "trainer",
    )


def test_register_trained_takes_the_lineage_from_the_training_manifest(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    import json

    from common.manifest import MANIFEST_FILE

    parent = registry.register(new_adapter(1), "support")
    folder = new_adapter(2)
    manifest = {
        "run_id": "run-7",
        "parent": {"relation": "continued_from", "sha256": parent.version},
        "dataset": {"hash": "d" * 64},
        "config": {"style": "sequential", "train": {"learning_rate": 0.002}},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    child = registry.register_trained(folder, "support", metadata={"loop_run": "r1"}, alias="challenger")
    assert child.parent == parent.ref and child.dataset_hash == "d" * 64
    assert child.training_config == manifest["config"]
    assert child.metadata == {"manifest": manifest, "loop_run": "r1"}
    assert child.aliases == ("challenger",)
    # a folder without a manifest (not trained here) registers plainly; an explicit parent wins
    plain = registry.register_trained(new_adapter(3), "support", parent=parent.ref)
    assert plain.parent == parent.ref and plain.dataset_hash is None and plain.metadata == {}


def test_register_is_idempotent_for_identical_weights(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    first = registry.register(new_adapter(1), "support")
    generation = registry.generation()
    again = registry.register(new_adapter(1), "support")  # same weights, another folder
    assert again.version == first.version
    assert registry.generation() == generation  # nothing changed
    assert len(registry.list("support")) == 1
    other = registry.register(new_adapter(2), "support")
    assert other.version != first.version
    assert [v.version for v in registry.list("support")] == [other.version, first.version]  # newest first
    assert registry.generation() > generation


def test_invalid_adapter_stores_nothing(
    registry: AdapterRegistry, tmp_path: Path, new_adapter: Callable[..., Path]
) -> None:
    bad = new_adapter(1, r=32)
    generation = registry.generation()
    with pytest.raises(AdapterValidationError) as info:
        registry.register(bad, "support")
    assert info.value.code == "rank_too_large"
    assert registry.list(include_retired=True) == []
    assert not (tmp_path / "adapters" / "support").exists()
    assert registry.generation() == generation


def test_failure_mid_copy_leaves_nothing(
    registry: AdapterRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_adapter: Callable[..., Path],
) -> None:
    folder = new_adapter(1)
    (folder / "README.md").write_text("x")

    def failing_copy(src: str, dst: str) -> None:
        if src.endswith("adapter_model.safetensors"):
            raise OSError("I/O error mid-copy")
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(artifacts_module, "_copy_file", failing_copy)
    with pytest.raises(OSError, match="mid-copy"):
        registry.register(folder, "support")
    assert registry.list(include_retired=True) == []
    assert list((tmp_path / "adapters" / "support").iterdir()) == []


def test_failed_db_insert_removes_copied_artifacts(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    folder = new_adapter(1)
    version = sha256_file(folder / "adapter_model.safetensors")

    seen: list[bool] = []

    def broken_insert(*args: object) -> None:
        seen.append(registry.artifacts.exists("support", version))  # artifacts are copied before the row
        raise RuntimeError("database went away")

    event.listen(AdapterVersionRow, "before_insert", broken_insert)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            registry.register(folder, "support")
    finally:
        event.remove(AdapterVersionRow, "before_insert", broken_insert)
    assert seen == [True]
    assert not registry.artifacts.exists("support", version)
    assert registry.list(include_retired=True) == []
    assert registry.register(folder, "support").version == version


def test_names_are_confined(
    registry: AdapterRegistry, tmp_path: Path, new_adapter: Callable[..., Path]
) -> None:
    folder = new_adapter(1)
    for name in ("../escape", "a/b", "/etc", "Support", "x@y", ".."):
        with pytest.raises(InvalidNameError):
            registry.register(folder, name)
    with pytest.raises(InvalidNameError):
        registry.register(folder, "support", alias="c0ffee")  # all-hex alias would read as a version
    assert registry.list(include_retired=True) == []
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == []


def test_get_by_prefix(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    versions = [registry.register(new_adapter(seed), "support") for seed in range(10)]
    target = versions[7]
    assert registry.get("support", target.version).version == target.version
    assert registry.get("support", target.version[:12].upper()).version == target.version
    with pytest.raises(InvalidNameError):
        registry.get("support", target.version[:5])
    with pytest.raises(VersionNotFoundError):
        registry.get("support", "ffffff" if not target.version.startswith("ffffff") else "000000")
    with pytest.raises(ModelNotFoundError):
        registry.get("nothing", target.version)
    with pytest.raises(AliasNotFoundError):
        registry.get("support", "champion")


def test_ambiguous_prefix(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    # Find two seeds whose weight hashes share the first 6 hex characters is infeasible; instead insert two
    # rows with crafted versions straight into the database (the registry trusts its own rows).
    real = registry.register(new_adapter(1), "support")
    with registry.db.session() as session:
        for suffix in ("0" * 58, "1" * 58):
            row = session.get(AdapterVersionRow, ("support", real.version))
            assert row is not None
            session.add(
                AdapterVersionRow(
                    **{
                        c: getattr(row, c)
                        for c in (
                            "name",
                            "base_model",
                            "base_fingerprint",
                            "rank",
                            "alpha",
                            "target_modules",
                            "size_bytes",
                            "uri",
                            "created_at",
                        )
                    },
                    version="abcdef" + suffix,
                    status="active",
                )
            )
    with pytest.raises(AmbiguousVersionError) as info:
        registry.get("support", "abcdef")
    assert len(info.value.candidates) == 2 and registry_status(info.value) == 400
    with pytest.raises(AmbiguousVersionError):
        registry.resolve("support@abcdef")
    assert registry.get("support", "abcdef0").version == "abcdef" + "0" * 58


def test_aliases_and_rollback_history(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a, b, c = (registry.register(new_adapter(s), "support") for s in (1, 2, 3))
    registry.set_alias("support", "champion", a.version[:8], actor="alice", reason="first")
    registry.set_alias("support", "champion", b.version[:8], actor="bob", reason="better")
    registry.set_alias("support", "champion", c.version[:8], actor="loop", reason="promotion")
    assert registry.resolve("support").served_version == c.version
    assert registry.rollback("support").version == b.version
    assert registry.rollback("support").version == a.version
    with pytest.raises(ConflictError):
        registry.rollback("support")
    history = registry.alias_history("support", "champion")
    assert [(e.kind, e.from_version, e.to_version) for e in history] == [
        ("set", None, a.version),
        ("set", a.version, b.version),
        ("set", b.version, c.version),
        ("rollback", c.version, b.version),
        ("rollback", b.version, a.version),
    ]
    assert [e.actor for e in history[:3]] == ["alice", "bob", "loop"]
    # Setting to the current version is a no-op (no event); setting from another alias copies it.
    registry.set_alias("support", "champion", a.version)
    assert len(registry.alias_history("support", "champion")) == 5
    registry.set_alias("support", "challenger", c.version)
    registry.set_alias("support", "champion", "challenger")
    assert registry.resolve("support").served_version == c.version
    assert registry.rollback("support").version == a.version


def test_rollback_after_delete_and_skips_retired(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    a, b, c = (registry.register(new_adapter(s), "support") for s in (1, 2, 3))
    for v in (a, b, c):
        registry.set_alias("support", "champion", v.version)
    registry.set_alias("support", "old", b.version)
    registry.delete_alias("support", "old")
    registry.remove("support", b.version)  # b is in champion's history but retired now
    assert registry.rollback("support").version == a.version  # skips retired b
    registry.delete_alias("support", "champion", reason="incident")
    with pytest.raises(AliasNotFoundError):
        registry.resolve("support")
    assert registry.rollback("support").version == a.version  # restores the deleted alias


def test_remove_is_refused_while_in_use(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a, b = (registry.register(new_adapter(s), "support") for s in (1, 2))
    registry.set_alias("support", "champion", a.version)
    with pytest.raises(ConflictError, match="champion"):
        registry.remove("support", a.version)
    registry.create_experiment("support-ab", [("support@champion", 1), (f"support@{b.version[:8]}", 1)])
    with pytest.raises(ConflictError, match="support-ab"):
        registry.remove("support", b.version)
    registry.stop_experiment("support-ab")
    retired = registry.remove("support", b.version)
    assert retired.status == "retired"
    assert not registry.artifacts.exists("support", b.version)
    assert [v.version for v in registry.list("support")] == [a.version]
    assert registry.get("support", b.version).status == "retired"  # kept for lineage
    with pytest.raises(VersionNotFoundError):
        registry.resolve(f"support@{b.version[:8]}")
    with pytest.raises(ConflictError, match="retired"):
        registry.set_alias("support", "challenger", b.version)
    # Registering the same weights again re-activates the version and restores its artifacts.
    again = registry.register(new_adapter(2), "support")
    assert again.version == b.version and again.status == "active"
    assert registry.artifacts.exists("support", b.version)


def test_update_metadata_merges(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    v = registry.register(new_adapter(1), "support", eval_results={"rouge": 0.4}, metadata={"a": 1})
    updated = registry.update_metadata(
        "support", v.version[:8], eval_results={"bleu": 0.2}, metadata={"b": 2}
    )
    assert updated.eval_results == {"rouge": 0.4, "bleu": 0.2}
    assert updated.metadata == {"a": 1, "b": 2}
    replaced = registry.update_metadata("support", v.version, eval_results={"x": 1}, replace_existing=True)
    assert replaced.eval_results == {"x": 1} and replaced.metadata == {"a": 1, "b": 2}


def test_parent_lineage(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a = registry.register(new_adapter(1), "support", parent=BASE, alias="champion")
    b = registry.register(new_adapter(2), "support", parent="support@champion")
    c = registry.register(new_adapter(3), "support", parent=f"support@{b.version[:7]}")
    assert a.parent == BASE and b.parent == a.ref and c.parent == b.ref
    assert [v.version for v in registry.lineage("support", c.version[:8])] == [
        c.version,
        b.version,
        a.version,
    ]
    with pytest.raises(ModelNotFoundError):
        registry.register(new_adapter(4), "support", parent="ghost@champion")


def test_generation_bumps_on_every_change(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    g0 = registry.generation()
    v = registry.register(new_adapter(1), "support")
    g1 = registry.generation()
    registry.set_alias("support", "champion", v.version)
    g2 = registry.generation()
    registry.update_metadata("support", v.version, metadata={"k": 1})
    g3 = registry.generation()
    with pytest.raises(ConflictError):
        registry.remove("support", v.version)  # refused -> rolled back, no bump
    registry.set_alias("support", "champion", v.version)  # no-op -> no bump, no event
    registry.update_metadata("support", v.version)
    assert g0 < g1 < g2 < g3 == registry.generation()
    assert len(registry.alias_history("support")) == 1


def test_concurrent_writers_are_serialized(
    new_adapter: Callable[..., Path], make_registry: Callable[..., AdapterRegistry]
) -> None:
    registry = make_registry()
    versions = [registry.register(new_adapter(s), "support") for s in range(3)]
    start = registry.generation()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def mover(k: int) -> None:
        own = make_registry()  # separate instances (own connections), as separate replicas
        barrier.wait()
        try:
            for i in range(8):
                own.set_alias("support", "champion", versions[(k + i) % 3].version, actor=f"t{k}")
                own.set_alias("support", f"t{k}", versions[i % 3].version)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = registry.alias_history("support", "champion")
    for before, after in zip(history, history[1:], strict=False):
        assert after.from_version == before.to_version  # each move saw the one before it
    assert registry.generation() == start + len(registry.alias_history("support"))


def test_memory_artifact_root_works_like_local(
    tmp_path: Path, new_adapter: Callable[..., Path], make_registry: Callable[..., AdapterRegistry]
) -> None:
    registry = make_registry(root=f"memory://tl-{uuid.uuid4().hex[:8]}")
    v = registry.register(new_adapter(1), "support", alias="champion")
    assert v.uri.startswith("memory://")
    local = registry.local_path(v)
    assert local.is_relative_to(tmp_path / "cache")
    assert sha256_file(local / "adapter_model.safetensors") == v.version
    registry.set_alias("support", "champion", registry.register(new_adapter(2), "support").version)
    registry.remove("support", v.version)
    assert not registry.artifacts.exists("support", v.version)
    assert not local.exists()


def test_results_are_plain_frozen_values(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    v = registry.register(new_adapter(1), "support")
    with pytest.raises(AttributeError):
        v.name = "x"  # type: ignore[misc]
    data = v.to_dict()
    assert data["ref"] == f"support@{v.version}" and data["created_at"].endswith("+00:00")
    assert 0 < v.lora_int_id < 2**31
    assert v.short_ref == f"support@{v.version[:12]}"


def test_rejected_version_leaves_serving_and_cannot_come_back(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    v1 = registry.register(new_adapter(1), "support", alias="champion")
    folder = new_adapter(2)
    v2 = registry.register(folder, "support", metadata={"owner": "team-a"})
    registry.stage("support", v2.version, "swap-1")
    rejected = registry.reject(
        "support", v2.version, "engine refused to load it: size mismatch", replica="r1"
    )
    assert rejected is not None and rejected.status == "rejected"
    assert rejected.rejection is not None and rejected.rejection["replica"] == "r1"
    assert rejected.to_dict()["rejected_reason"] == "engine refused to load it: size mismatch"
    assert rejected.metadata is not None and rejected.metadata["owner"] == "team-a"  # user metadata kept
    # once: a second replica's rejection keeps the first reason and changes nothing
    generation = registry.generation()
    again_rejected = registry.reject("support", v2.version, "smoke generation failed", replica="r2")
    assert again_rejected is not None and again_rejected.rejection == rejected.rejection
    assert registry.generation() == generation
    assert registry.get("support", v2.version).rejection["reason"].startswith("engine refused")  # type: ignore[index]
    # not routable, not desired, not listed unless asked for; the stage is gone
    with pytest.raises(VersionNotFoundError):
        registry.resolve(f"support@{v2.version[:12]}")
    assert [v.ref for v in registry.desired_set()] == [v1.ref]
    assert [v.version for v in registry.list("support")] == [v1.version]
    listed = {v.version: v.status for v in registry.list("support", include_retired=True)}
    assert listed == {v1.version: "active", v2.version: "rejected"}
    # cannot be aliased, staged or registered again (same weights)
    with pytest.raises(ConflictError) as moved:
        registry.set_alias("support", "champion", v2.version)
    assert moved.value.code == "adapter_rejected" and "engine refused" in moved.value.message
    with pytest.raises(ConflictError):
        registry.stage("support", v2.version, "swap-2")
    with pytest.raises(AdapterValidationError) as again:
        registry.register(folder, "support")
    assert again.value.code == "rejected"
    # an operator can still retire it
    assert registry.remove("support", v2.version).status == "retired"
