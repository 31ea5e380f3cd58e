"""Model-name resolution and A/B arm assignment on an in-memory routing snapshot.

The hot path never touches the database: each replica keeps a `RoutingSnapshot` built from the
registry whenever its generation changes, and resolves every request's `model` against it:

- the base model id → the base model;
- `name` → the version behind alias `champion` of adapter `name`;
- `name@alias` → that alias's version; `name@<hex prefix>` (≥ 6 chars) → that version;
- an active experiment's name → one of its arms, chosen by a stable hash of the user (sticky) or at
  random when the request names no user; the experiment's shadow arm (if any) is returned beside it;
- a name an active experiment *intercepts* (a canary on `name`) → that experiment, the same way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from serving.engine.base import LoRASpec
from serving.errors import ModelNotFoundError, ServiceUnavailableError

DEFAULT_ALIAS = "champion"
MIN_PREFIX = 6


@dataclass(frozen=True, slots=True)
class VersionRef:
    """An adapter version as the router sees it: enough to load and name it."""

    name: str
    version: str
    path: str  # local folder

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def short(self) -> str:
        return f"{self.name}@{self.version[:12]}"

    def lora(self) -> LoRASpec:
        return LoRASpec(name=self.short, lora_int_id=lora_int_id(self.version), path=self.path)


def lora_int_id(version: str) -> int:
    """A stable positive 31-bit id for an adapter version (vLLM identifies adapters by int)."""
    return (int(version[:8], 16) & 0x7FFFFFFF) or 1


@dataclass(frozen=True, slots=True)
class Arm:
    """An experiment arm: `model` is its label (as created), `target` what it is pinned to."""

    model: str
    weight: float
    target: str = ""

    @property
    def resolves_to(self) -> str:
        return self.target or self.model


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    name: str
    arms: tuple[Arm, ...]
    shadow: str | None = None  # pinned target of the shadow model
    intercept: str | None = None  # a model name whose traffic this experiment takes over (canary)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes: the base (`version is None`) or an adapter version."""

    served_name: str
    version: VersionRef | None = None
    experiment: str | None = None
    arm: str | None = None

    @property
    def served_by(self) -> str:
        if self.version is None:
            return self.served_name
        return self.version.short

    @property
    def version_hash(self) -> str | None:
        return self.version.version if self.version else None


@dataclass(slots=True)
class RoutingSnapshot:
    base_id: str
    versions: dict[str, dict[str, VersionRef]] = field(default_factory=dict)  # name -> version -> ref
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, alias) -> version
    experiments: dict[str, ExperimentSpec] = field(default_factory=dict)
    intercepts: dict[str, ExperimentSpec] = field(default_factory=dict)
    base_aliases: frozenset[str] = frozenset()
    generation: int = -1

    @classmethod
    def build(
        cls,
        base_id: str,
        versions: Iterable[VersionRef],
        aliases: Mapping[tuple[str, str], str],
        experiments: Iterable[ExperimentSpec],
        *,
        base_aliases: Iterable[str] = (),
        generation: int = -1,
    ) -> RoutingSnapshot:
        snap = cls(base_id=base_id, base_aliases=frozenset(base_aliases), generation=generation)
        for v in versions:
            snap.versions.setdefault(v.name, {})[v.version] = v
        snap.aliases = dict(aliases)
        snap.experiments = {e.name: e for e in experiments}
        snap.intercepts = {e.intercept: e for e in snap.experiments.values() if e.intercept}
        return snap

    def is_base(self, model: str) -> bool:
        return model == self.base_id or model in self.base_aliases

    def resolve_model(self, model: str) -> Target:
        """Resolve a plain model name (base, adapter, alias or version), not an experiment."""
        if self.is_base(model):
            return Target(served_name=self.base_id)
        name, _, ref = model.partition("@")
        versions = self.versions.get(name)
        if not versions:
            raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
        ref = ref or DEFAULT_ALIAS
        version = self.aliases.get((name, ref))
        if version is None:
            if len(ref) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in ref):
                matches = [v for v in versions if v.startswith(ref)]
                if len(matches) > 1:
                    raise ModelNotFoundError(
                        f"The version prefix '{ref}' of '{name}' is ambiguous; use more characters.",
                        param="model",
                    )
                if matches:
                    version = matches[0]
            if version is None:
                detail = (
                    "has no alias 'champion'" if ref == DEFAULT_ALIAS else f"has no alias or version '{ref}'"
                )
                raise ModelNotFoundError(
                    f"The model '{model}' does not exist: adapter '{name}' {detail}.", param="model"
                )
        vref = versions.get(version)
        if vref is None:
            raise ServiceUnavailableError(
                f"Version {version[:12]} of '{name}' is not available on this replica."
            )
        return Target(served_name=name, version=vref)

    def resolve(
        self, model: str, user: str | None, rng: random.Random | None = None
    ) -> tuple[Target, Target | None]:
        """Resolve a request's model; experiments pick an arm. Returns (primary, shadow-or-None)."""
        exp = self.experiments.get(model) or self.intercepts.get(model)
        if exp is None:
            return self.resolve_model(model), None
        arm = pick_arm(exp, user, rng)
        primary = self.resolve_model(arm.resolves_to)
        primary = Target(primary.served_name, primary.version, experiment=exp.name, arm=arm.model)
        shadow = None
        if exp.shadow:
            s = self.resolve_model(exp.shadow)
            shadow = Target(s.served_name, s.version, experiment=exp.name, arm=exp.shadow)
        return primary, shadow

    def model_names(self) -> list[tuple[str, str, str | None]]:
        """(id, kind, version) for every addressable name, for GET /v1/models."""
        out: list[tuple[str, str, str | None]] = [(self.base_id, "base", None)]
        for name in sorted(self.versions):
            champion = self.aliases.get((name, DEFAULT_ALIAS))
            if champion:
                out.append((name, "adapter", champion))
        for (name, alias), version in sorted(self.aliases.items()):
            out.append((f"{name}@{alias}", "alias", version))
        for name in sorted(self.versions):
            for version in sorted(self.versions[name]):
                out.append((f"{name}@{version[:12]}", "version", version))
        for exp in sorted(self.experiments):
            out.append((exp, "experiment", None))
        return out


def assignment_point(experiment: str, user: str) -> float:
    """A stable point in [0, 1) for (experiment, user): the same user always lands on the same arm."""
    digest = hashlib.sha256(f"{experiment}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_arm(exp: ExperimentSpec, user: str | None, rng: random.Random | None = None) -> Arm:
    total = sum(a.weight for a in exp.arms)
    point = assignment_point(exp.name, user) if user else (rng or random).random()
    acc = 0.0
    for arm in exp.arms:
        acc += arm.weight / total
        if point < acc:
            return arm
    return exp.arms[-1]
