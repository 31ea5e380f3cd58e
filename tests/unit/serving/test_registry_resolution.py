"""The registry's model-name resolution (the router's resolver on a snapshot of the registry state; the
resolver itself is tested in test_router.py), its typed errors, experiments, the desired adapter set,
reads across registry instances and replica heartbeats (SQLite)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.api.errors import api_error, registry_status
from serving.registry import (
    AdapterRegistry,
    AliasNotFoundError,
    ConflictError,
    ExperimentNotFoundError,
    InvalidNameError,
    InvalidRequestError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from serving.registry.testing import SMOLLM2_BASE as BASE


def test_base_names_resolve_to_base(registry: AdapterRegistry) -> None:
    for model in (BASE, "SmolLM2-135M-Instruct", "default", "base", "local-folder"):
        resolved = registry.resolve(model)
        assert resolved.is_base and resolved.name == BASE and resolved.served_version is None


def test_adapter_name_rules(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a = registry.register(new_adapter(1), "support")
    b = registry.register(new_adapter(2), "support", alias="challenger")
    with pytest.raises(AliasNotFoundError, match="no 'champion'") as info:
        registry.resolve("support")  # no champion: never guess a version
    assert registry_status(info.value) == 404 and info.value.code == "model_not_found"
    registry.set_alias("support", "champion", a.version)
    plain = registry.resolve("support")
    assert (plain.kind, plain.name, plain.alias, plain.served_version) == (
        "adapter",
        "support",
        "champion",
        a.version,
    )
    assert registry.resolve("support@challenger").served_version == b.version
    assert registry.resolve(f"support@{b.version[:6]}").served_version == b.version
    assert registry.resolve(f"support@{b.version}").alias is None
    with pytest.raises(AliasNotFoundError):
        registry.resolve("support@canary")
    with pytest.raises(VersionNotFoundError):
        registry.resolve("support@" + ("0" * 6 if not a.version.startswith("000000") else "1" * 6))
    with pytest.raises(InvalidNameError):
        registry.resolve(f"support@{b.version[:5]}")  # prefix too short
    for unknown in ("nothing", "nothing@champion", "gpt-4", "", "support@", "@champion"):
        with pytest.raises(ModelNotFoundError):
            registry.resolve(unknown)
    error = pytest.raises(ModelNotFoundError, registry.resolve, "gpt-4").value
    assert (error.code, error.param) == ("model_not_found", "model")
    envelope = api_error(error).to_body()["error"]  # the API's one table renders it
    assert envelope == {
        "message": error.message,
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


def test_experiments_validation(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    b = registry.register(new_adapter(2), "support", alias="challenger")
    with pytest.raises(InvalidRequestError, match="at least 2 arms"):
        registry.create_experiment("ab", [("support", 1.0)])
    for bad_weight in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises(InvalidRequestError, match="weight"):
            registry.create_experiment("ab", [("support", 1.0), ("support@challenger", bad_weight)])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="same model version"):
        registry.create_experiment("ab", [("support", 1.0), (f"support@{a.version[:8]}", 1.0)])
    with pytest.raises(ModelNotFoundError):
        registry.create_experiment("ab", [("support", 1.0), ("ghost", 1.0)])
    with pytest.raises(ConflictError):
        registry.create_experiment("support", [("support", 1.0), ("support@challenger", 1.0)])
    with pytest.raises(ConflictError):
        registry.create_experiment("default", [("support", 1.0), ("support@challenger", 1.0)])
    with pytest.raises(InvalidNameError):
        registry.create_experiment("A/B", [("support", 1.0), ("support@challenger", 1.0)])
    with pytest.raises(InvalidRequestError, match="also an arm"):
        registry.create_experiment("ab", [("support", 1.0)], shadow="support@champion")
    assert registry.list_experiments() == []

    exp = registry.create_experiment(
        "ab", [("support", 0.9), {"model": "support@challenger", "weight": 0.1}], description="canary"
    )
    assert [(arm.model, arm.weight, arm.target) for arm in exp.arms] == [
        ("support", 0.9, a.ref),
        ("support@challenger", 0.1, b.ref),
    ]
    assert exp.is_active and exp.description == "canary" and exp.total_weight == pytest.approx(1.0)
    with pytest.raises(ConflictError):
        registry.create_experiment("ab", [("support", 1.0), (BASE, 1.0)])
    with pytest.raises(InvalidRequestError, match="experiment"):
        registry.create_experiment("nested", [("ab", 1.0), (BASE, 1.0)])
    with pytest.raises(ConflictError, match="experiment"):
        registry.register(new_adapter(3), "ab")  # adapter names and experiment names share one namespace


def test_experiment_resolution_and_pinning(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    b = registry.register(new_adapter(2), "support", alias="challenger")
    c = registry.register(new_adapter(3), "support")
    registry.create_experiment("canary", [(BASE, 1.0), ("support@challenger", 3.0)], shadow="support")
    resolved = registry.resolve("canary")
    assert resolved.is_experiment and resolved.experiment is not None
    arms = [arm.resolved("canary") for arm in resolved.experiment.arms]
    assert [(r.kind, r.served_version) for r in arms] == [("base", None), ("adapter", b.version)]
    assert resolved.experiment.shadow is not None and resolved.experiment.shadow.version == a
    # Arms are pinned: moving the alias later does not change the running experiment.
    registry.set_alias("support", "challenger", c.version)
    assert registry.get_experiment("canary").arms[1].target == b.ref
    stopped = registry.stop_experiment("canary")
    assert stopped.status == "stopped" and stopped.stopped_at is not None
    assert registry.stop_experiment("canary").stopped_at == stopped.stopped_at  # idempotent
    with pytest.raises(ExperimentNotFoundError):
        registry.resolve("canary")
    with pytest.raises(ExperimentNotFoundError):
        registry.get_experiment("nope")
    assert [e.name for e in registry.list_experiments()] == ["canary"]
    assert registry.list_experiments(active_only=True) == []


def test_desired_set(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    b = registry.register(new_adapter(2), "support")
    c = registry.register(new_adapter(3), "support")
    registry.register(new_adapter(4), "support")  # no alias, no experiment -> not loaded
    s = registry.register(new_adapter(5), "sql", alias="champion")
    registry.set_alias("sql", "stable", s.version)  # two aliases, one version -> listed once
    assert {v.ref for v in registry.desired_set()} == {a.ref, s.ref}
    registry.create_experiment(
        "ab", [("support", 1), (f"support@{b.version[:8]}", 1)], shadow=f"support@{c.version}"
    )
    assert {v.ref for v in registry.desired_set()} == {a.ref, b.ref, c.ref, s.ref}
    refs = [v.ref for v in registry.desired_set()]
    assert refs == sorted(refs)
    registry.stop_experiment("ab")
    assert {v.ref for v in registry.desired_set()} == {a.ref, s.ref}


def test_staging_for_hot_swap(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    b = registry.register(new_adapter(2), "support")
    g = registry.generation()
    assert registry.stage("support", b.version[:8], "swap-1").version == b.version
    assert registry.generation() == g + 1
    assert {v.ref for v in registry.desired_set()} == {a.ref, b.ref}
    assert registry.resolve("support").served_version == a.version  # staging never changes routing
    with pytest.raises(ConflictError, match="staged"):
        registry.remove("support", b.version)
    registry.unstage("swap-1")
    registry.unstage("swap-1")  # already gone: no-op, no bump
    assert registry.generation() == g + 2
    assert {v.ref for v in registry.desired_set()} == {a.ref}
    registry.stage("support", b.version, "swap-2", ttl_s=0.05)
    time.sleep(0.06)
    assert {v.ref for v in registry.desired_set()} == {a.ref}  # expired: a crashed swap pins nothing
    with pytest.raises(InvalidRequestError):
        registry.stage("support", b.version, "")


def test_rollback_target_previews_rollback(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    with pytest.raises(ConflictError):
        registry.rollback_target("support")
    b = registry.register(new_adapter(2), "support", alias="champion")
    g = registry.generation()
    assert registry.rollback_target("support").version == a.version
    assert registry.generation() == g and registry.resolve("support").served_version == b.version
    assert registry.rollback("support").version == registry.resolve("support").served_version == a.version


def test_resolution_sees_other_instances_changes(
    new_adapter: Callable[..., Path], make_registry: Callable[..., AdapterRegistry]
) -> None:
    writer = make_registry()
    reader = make_registry()
    a = writer.register(new_adapter(1), "support", alias="champion")
    assert reader.resolve("support").served_version == a.version
    b = writer.register(new_adapter(2), "support")
    writer.set_alias("support", "champion", b.version)
    assert reader.resolve("support").served_version == b.version  # reads see the current state
    writer.rollback("support")
    assert reader.resolve("support").served_version == a.version


def test_resolution_errors_and_intercepts(
    registry: AdapterRegistry, new_adapter: Callable[..., Path]
) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    b = registry.register(new_adapter(2), "support", alias="challenger")
    assert registry.resolve(f"support@{b.version[:8].upper()}").served_version == b.version
    with pytest.raises(InvalidNameError):
        registry.resolve("support@" + "a" * 65)  # longer than a version
    with pytest.raises(ModelNotFoundError, match="not of the form"):
        registry.resolve("support@")
    with pytest.raises(ModelNotFoundError, match="no model given"):
        registry.resolve("")
    with pytest.raises(AliasNotFoundError):
        registry.get("support", "canary")
    with pytest.raises(ModelNotFoundError, match="no adapter named 'ghost'"):
        registry.get("ghost", "champion")
    registry.create_experiment(
        "support-canary", [("support", 1.0), ("support@challenger", 1.0)], intercept="support"
    )
    exp = registry.get_experiment("support-canary")
    assert [arm.target for arm in exp.arms] == [a.ref, b.ref]  # arms never resolve through intercepts
    intercepted = registry.resolve("support")  # requests to `support` go to the canary now
    assert intercepted.is_experiment and intercepted.experiment == exp
    assert registry.resolve("support@champion").served_version == a.version
    registry.stop_experiment("support-canary")
    assert registry.resolve("support").served_version == a.version


def test_heartbeats(registry: AdapterRegistry, new_adapter: Callable[..., Path]) -> None:
    a = registry.register(new_adapter(1), "support", alias="champion")
    generation = registry.generation()
    registry.heartbeat("replica-1", [a.ref, a.ref], generation)
    registry.heartbeat("replica-2", [], generation - 1)
    registry.heartbeat("replica-2", [a.ref], generation, failed={"support@" + "b" * 64: "smoke failed"})
    assert registry.generation() == generation  # heartbeats are not registry changes
    live = registry.live_replicas(max_age_s=60)
    assert [(r.replica_id, r.loaded, r.generation) for r in live] == [
        ("replica-1", (a.ref,), generation),
        ("replica-2", (a.ref,), generation),
    ]
    assert live[0].failed == {} and live[1].failed == {"support@" + "b" * 64: "smoke failed"}
    assert live[1].to_dict()["failed"] == {"support@" + "b" * 64: "smoke failed"}
    time.sleep(0.05)
    registry.heartbeat("replica-1", [a.ref], generation)
    assert [r.replica_id for r in registry.live_replicas(max_age_s=0.04)] == ["replica-1"]
    registry.forget_replica("replica-1")
    assert [r.replica_id for r in registry.live_replicas(max_age_s=60)] == ["replica-2"]
    with pytest.raises(InvalidRequestError):
        registry.heartbeat("", [], 0)
