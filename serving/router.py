"""Model-name resolution and A/B arm assignment on an in-memory routing snapshot.

This is the one model-name resolver: the hot path resolves every request's `model` against a replica's
`RoutingSnapshot` (built from the registry whenever its generation changes; no database per request),
and the registry resolves names (experiment arms, parents, `AdapterRegistry.resolve`) against a snapshot
of its own state. The rules:

- the base model id and its `base_names` (the id's last path part, `default`, `base`, configured
  extras) → the base model;
- `name` → the version behind alias `champion` of adapter `name` (never a guess when it has none);
- `name@alias` → that alias's version; `name@<hex prefix>` (6 to 64 hex chars, unique) → that version;
  aliases are never all-hex, so the two forms do not clash; `name@` and `@ref` name nothing;
- an active experiment's name → one of its arms, chosen by a stable hash of the user (sticky) or at
  random when the request names no user; the experiment's shadow arm (if any) is returned beside it;
- a name an active experiment *intercepts* (a canary on `name`) → that experiment, the same way.

`RoutingSnapshot.lookup` says why a name resolves to nothing (`Miss`) instead of raising, so each caller
words the failure for its audience: `Miss.error()` is the OpenAI API's error, the registry has its own.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from serving.engine.base import LoRASpec
from serving.errors import APIError, ModelNotFoundError, ServiceUnavailableError

DEFAULT_ALIAS = "champion"
MIN_PREFIX = 6
MAX_PREFIX = 64
BASE_ALIASES: tuple[str, ...] = ("default", "base")
"""Model names that always mean the base model, besides its id (see `base_names`)."""

_HEX = re.compile(r"^[0-9a-f]+$")


def base_names(base_id: str, aliases: Iterable[str] = ()) -> frozenset[str]:
    """Every model name that means the base model: its id, the id's last path part
    ("org/Model" -> "Model"), `BASE_ALIASES` and the extra `aliases` (e.g. the local folder's name)."""
    basename = base_id.rstrip("/").rsplit("/", 1)[-1]
    return frozenset({base_id, basename, *BASE_ALIASES, *aliases})


def is_version_prefix(ref: str) -> bool:
    """Whether `ref` has the form of a version prefix (hex, any length; see `MIN_PREFIX`)."""
    return bool(_HEX.match(ref.lower()))


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
    """Where one request goes: the base (`version is None`) or an adapter version (`alias`: the alias it
    was reached through, None for a version prefix)."""

    served_name: str
    version: VersionRef | None = None
    experiment: str | None = None
    arm: str | None = None
    alias: str | None = None

    @property
    def served_by(self) -> str:
        if self.version is None:
            return self.served_name
        return self.version.short

    @property
    def version_hash(self) -> str | None:
        return self.version.version if self.version else None


MissReason = Literal[
    "unknown",  # no such adapter (nor base)
    "malformed",  # `name@` (an adapter's name, nothing after the `@`)
    "no_champion",  # a bare adapter name without a `champion` alias
    "no_alias",  # `name@alias`: no such alias
    "bad_prefix",  # `name@<hex>` shorter than MIN_PREFIX or longer than MAX_PREFIX
    "no_version",  # `name@<hex prefix>`: no version matches
    "ambiguous",  # `name@<hex prefix>`: several versions match (`candidates`)
    "not_loaded",  # an alias points at a version this snapshot does not hold (`version`)
]


@dataclass(frozen=True, slots=True)
class Miss:
    """Why `model` resolves to nothing: `name` and `ref` are its two halves (`ref` "" when bare)."""

    reason: MissReason
    model: str
    name: str = ""
    ref: str = ""
    candidates: tuple[str, ...] = ()
    version: str = ""

    def error(self) -> APIError:
        """The OpenAI API's error for this miss (404 `model_not_found`; 503 when not loaded here)."""
        model, name, ref = self.model, self.name, self.ref
        if self.reason in ("unknown", "malformed"):
            return ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
        if self.reason == "ambiguous":
            return ModelNotFoundError(
                f"The version prefix '{ref}' of '{name}' is ambiguous; use more characters.", param="model"
            )
        if self.reason == "not_loaded":
            return ServiceUnavailableError(
                f"Version {self.version[:12]} of '{name}' is not available on this replica."
            )
        detail = (
            f"has no alias '{DEFAULT_ALIAS}'"
            if (ref or DEFAULT_ALIAS) == DEFAULT_ALIAS
            else f"has no alias or version '{ref}'"
        )
        return ModelNotFoundError(
            f"The model '{model}' does not exist: adapter '{name}' {detail}.", param="model"
        )


@dataclass(slots=True)
class RoutingSnapshot:
    base_id: str
    versions: dict[str, dict[str, VersionRef]] = field(default_factory=dict)  # name -> version -> ref
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, alias) -> version
    experiments: dict[str, ExperimentSpec] = field(default_factory=dict)
    intercepts: dict[str, ExperimentSpec] = field(default_factory=dict)
    base_names: frozenset[str] = frozenset()
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
        """`base_aliases`: extra names of the base model besides `base_names(base_id)`'s."""
        snap = cls(base_id=base_id, base_names=base_names(base_id, base_aliases), generation=generation)
        for v in versions:
            snap.versions.setdefault(v.name, {})[v.version] = v
        snap.aliases = dict(aliases)
        snap.experiments = {e.name: e for e in experiments}
        snap.intercepts = {e.intercept: e for e in snap.experiments.values() if e.intercept}
        return snap

    def is_base(self, model: str) -> bool:
        return model == self.base_id or model in self.base_names

    def experiment_for(self, model: str) -> ExperimentSpec | None:
        """The active experiment serving requests to `model`: named so, or intercepting that name."""
        return self.experiments.get(model) or self.intercepts.get(model)

    def lookup(self, model: str) -> Target | Miss:
        """Resolve a plain model name (base, adapter, alias or version; not an experiment), or say why
        it names nothing."""
        if self.is_base(model):
            return Target(served_name=self.base_id)
        name, at, ref = model.partition("@")
        versions = self.versions.get(name)
        if not versions:
            return Miss("unknown", model, name, ref)
        if at and not ref:
            return Miss("malformed", model, name, ref)
        alias = ref or DEFAULT_ALIAS
        version = self.aliases.get((name, alias))
        if version is None:
            if not at:
                return Miss("no_champion", model, name, ref)
            if not is_version_prefix(ref):
                return Miss("no_alias", model, name, ref)
            prefix = ref.lower()
            if not MIN_PREFIX <= len(prefix) <= MAX_PREFIX:
                return Miss("bad_prefix", model, name, ref)
            matches = sorted(v for v in versions if v.startswith(prefix))
            if len(matches) > 1:
                return Miss("ambiguous", model, name, ref, candidates=tuple(matches))
            if not matches:
                return Miss("no_version", model, name, ref)
            return Target(served_name=name, version=versions[matches[0]])
        vref = versions.get(version)
        if vref is None:
            return Miss("not_loaded", model, name, ref, version=version)
        return Target(served_name=name, version=vref, alias=alias)

    def resolve_model(self, model: str) -> Target:
        """Resolve a plain model name (base, adapter, alias or version), not an experiment."""
        found = self.lookup(model)
        if isinstance(found, Miss):
            raise found.error()
        return found

    def resolve(
        self, model: str, user: str | None, rng: random.Random | None = None
    ) -> tuple[Target, Target | None]:
        """Resolve a request's model; experiments pick an arm. Returns (primary, shadow-or-None)."""
        exp = self.experiment_for(model)
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
