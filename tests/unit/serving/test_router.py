"""The one model-name resolver (`serving.router.RoutingSnapshot`), tested directly on hand-built
snapshots: base names, `name`, `name@alias`, `name@<hex prefix>`, ambiguous and unknown names,
experiments (sticky arms, shadows, pinning), intercepts, versions a snapshot does not hold, and the
`Miss` reasons the registry words as its own errors."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from serving.errors import ModelNotFoundError, ServiceUnavailableError
from serving.router import (
    BASE_ALIASES,
    Arm,
    ExperimentSpec,
    Miss,
    RoutingSnapshot,
    Target,
    VersionRef,
    assignment_point,
    base_names,
    pick_arm,
)

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def version(seed: int) -> str:
    return hashlib.sha256(f"adapter-{seed}".encode()).hexdigest()


A, B, C, S = version(1), version(2), version(3), version(5)


def ref(name: str, v: str) -> VersionRef:
    return VersionRef(name, v, f"/adapters/{name}/{v}")


def snapshot(
    aliases: dict[tuple[str, str], str] | None = None,
    experiments: tuple[ExperimentSpec, ...] = (),
    versions: tuple[VersionRef, ...] = (ref("support", A), ref("support", B), ref("support", C)),
) -> RoutingSnapshot:
    return RoutingSnapshot.build(
        BASE,
        versions,
        {("support", "challenger"): B} if aliases is None else aliases,
        experiments,
        base_aliases=("local-folder",),
        generation=7,
    )


def miss(snap: RoutingSnapshot, model: str) -> Miss:
    found = snap.lookup(model)
    assert isinstance(found, Miss), found
    return found


def test_base_names_resolve_to_base() -> None:
    snap = snapshot()
    assert base_names(BASE) == {BASE, "SmolLM2-135M-Instruct", *BASE_ALIASES}
    assert set(BASE_ALIASES) == {"default", "base"}
    for model in (BASE, "SmolLM2-135M-Instruct", "default", "base", "local-folder"):
        target = snap.resolve_model(model)
        assert target == Target(served_name=BASE) and target.served_by == BASE
        assert target.version_hash is None and snap.is_base(model)
    assert snap.resolve("default", "u1") == (Target(served_name=BASE), None)
    assert not snap.is_base("support") and snap.generation == 7


def test_adapter_name_rules() -> None:
    snap = snapshot()
    with pytest.raises(ModelNotFoundError, match="has no alias 'champion'") as info:
        snap.resolve_model("support")  # no champion: never guess a version
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    snap = snapshot({("support", "champion"): A, ("support", "challenger"): B})
    plain = snap.resolve_model("support")
    assert (plain.served_name, plain.alias, plain.version_hash) == ("support", "champion", A)
    assert plain.served_by == f"support@{A[:12]}" and plain.version == ref("support", A)
    assert snap.resolve_model("support@champion") == plain
    assert snap.resolve_model("support@challenger").version_hash == B
    assert snap.resolve_model(f"support@{B[:6]}").version_hash == B
    assert snap.resolve_model(f"support@{B[:6].upper()}").version_hash == B
    assert snap.resolve_model(f"support@{B}").alias is None
    with pytest.raises(ModelNotFoundError, match="has no alias or version 'canary'"):
        snap.resolve_model("support@canary")
    with pytest.raises(ModelNotFoundError, match="has no alias or version"):
        snap.resolve_model("support@" + ("0" * 6 if not A.startswith("000000") else "1" * 6))
    with pytest.raises(ModelNotFoundError):
        snap.resolve_model(f"support@{B[:5]}")  # prefix too short
    for unknown in ("nothing", "nothing@champion", "gpt-4", "", "support@", "@champion"):
        with pytest.raises(ModelNotFoundError):
            snap.resolve_model(unknown)
        with pytest.raises(ModelNotFoundError):
            snap.resolve(unknown, "u1")
    error = pytest.raises(ModelNotFoundError, snap.resolve_model, "gpt-4").value
    assert error.to_body() == {
        "error": {
            "message": "The model 'gpt-4' does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_lookup_says_why_a_name_names_nothing() -> None:
    amb0, amb1 = "abcdef" + "0" * 58, "abcdef" + "1" * 58
    snap = snapshot(
        {("support", "challenger"): B, ("support", "gone"): C},
        versions=(ref("support", A), ref("support", B), ref("support", amb0), ref("support", amb1)),
    )
    cases = {
        "nothing": "unknown",
        "@champion": "unknown",
        "": "unknown",
        "support@": "malformed",
        "support": "no_champion",
        "support@champion": "no_alias",
        "support@canary": "no_alias",
        f"support@{A[:5]}": "bad_prefix",
        "support@" + "a" * 65: "bad_prefix",
        "support@" + ("0" * 8 if not A.startswith("0") else "1" * 8): "no_version",
        "support@abcdef": "ambiguous",
        "support@gone": "not_loaded",
    }
    for model, reason in cases.items():
        found = miss(snap, model)
        assert (found.reason, found.model) == (reason, model), model
    assert miss(snap, "support@abcdef").candidates == (amb0, amb1)
    assert miss(snap, "support@gone").version == C
    assert (miss(snap, "support@canary").name, miss(snap, "support@canary").ref) == ("support", "canary")
    with pytest.raises(ModelNotFoundError, match="ambiguous"):
        snap.resolve_model("support@abcdef")
    assert snap.resolve_model("support@abcdef0").version_hash == amb0
    assert snap.lookup(f"support@{A[:6]}") == Target("support", ref("support", A))


def test_versions_the_snapshot_does_not_hold() -> None:
    # C is retired (or not loaded on this replica): it is not in the snapshot, so nothing reaches it.
    snap = snapshot(
        {("support", "champion"): A, ("support", "next"): C},
        versions=(ref("support", A), ref("support", B)),
    )
    with pytest.raises(ModelNotFoundError):
        snap.resolve_model(f"support@{C[:8]}")
    with pytest.raises(ServiceUnavailableError, match="not available on this replica") as info:
        snap.resolve_model("support@next")  # an alias whose version is not held here
    assert info.value.status_code == 503
    assert snap.resolve_model("support").version_hash == A


def test_model_names() -> None:
    snap = RoutingSnapshot.build(
        BASE,
        [ref("support", A), ref("sql", S)],
        {("support", "champion"): A, ("sql", "challenger"): S},
        [ExperimentSpec("ab", (Arm("support", 1.0, f"support@{A}"), Arm(BASE, 1.0, BASE)))],
    )
    # an adapter without a champion is listed only as name@alias and name@version, never bare
    assert snap.model_names() == [
        (BASE, "base", None),
        ("support", "adapter", A),
        ("sql@challenger", "alias", S),
        ("support@champion", "alias", A),
        (f"sql@{S[:12]}", "version", S),
        (f"support@{A[:12]}", "version", A),
        ("ab", "experiment", None),
    ]


def canary(**kwargs: object) -> ExperimentSpec:
    return ExperimentSpec(
        "canary",
        (Arm(BASE, 1.0, BASE), Arm("support@challenger", 3.0, f"support@{B}")),
        shadow=f"support@{A}",
        **kwargs,  # type: ignore[arg-type]
    )


def test_experiment_arms_are_sticky_weighted_and_shadowed() -> None:
    snap = snapshot({("support", "champion"): A, ("support", "challenger"): B}, (canary(),))
    primary, shadow = snap.resolve("canary", "user-1")
    assert primary.experiment == "canary" and primary.arm in {BASE, "support@challenger"}
    assert shadow == Target("support", ref("support", A), experiment="canary", arm=f"support@{A}")
    for _ in range(5):  # the same user always lands on the same arm
        assert snap.resolve("canary", "user-1")[0] == primary
    arms = Counter(snap.resolve("canary", f"user-{i}")[0].arm for i in range(2000))
    assert arms["support@challenger"] / 2000 == pytest.approx(0.75, abs=0.05)
    served = {snap.resolve("canary", f"user-{i}")[0].version_hash for i in range(50)}
    assert served == {None, B}  # the base arm, and the pinned version of the challenger arm
    rng = random.Random(0)
    anonymous = Counter(snap.resolve("canary", None, rng)[0].arm for _ in range(400))
    assert set(anonymous) == {BASE, "support@challenger"}  # no user: random
    # Arms are pinned: moving the alias later does not change the running experiment.
    moved = snapshot({("support", "champion"): A, ("support", "challenger"): C}, (canary(),))
    assert {moved.resolve("canary", f"user-{i}")[0].version_hash for i in range(50)} == {None, B}
    # An experiment no longer active is not in the snapshot: its name resolves to nothing.
    with pytest.raises(ModelNotFoundError):
        snapshot({("support", "champion"): A}).resolve("canary", "user-1")
    # An experiment is not a plain model: resolve_model does not pick arms.
    with pytest.raises(ModelNotFoundError):
        snap.resolve_model("canary")


def test_intercept_takes_over_a_model_name() -> None:
    snap = snapshot(
        {("support", "champion"): A, ("support", "challenger"): B}, (canary(intercept="support"),)
    )
    assert snap.experiment_for("support") == snap.experiment_for("canary") == snap.experiments["canary"]
    primary, shadow = snap.resolve("support", "user-1")
    assert primary.experiment == "canary" and shadow is not None and shadow.version_hash == A
    assert snap.resolve_model("support").version_hash == A  # plain resolution ignores intercepts
    assert snap.resolve("support@champion", "user-1") == (snap.resolve_model("support@champion"), None)
    assert snapshot({("support", "champion"): A}).experiment_for("support") is None


def test_pick_arm_is_a_stable_hash_of_experiment_and_user() -> None:
    exp = canary()
    assert assignment_point("canary", "u") == assignment_point("canary", "u")
    assert assignment_point("canary", "u") != assignment_point("other", "u")
    assert 0 <= assignment_point("canary", "u") < 1
    assert pick_arm(exp, "u") == pick_arm(exp, "u")
    assert pick_arm(exp, None, random.Random(1)) in exp.arms
