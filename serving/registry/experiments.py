"""A/B experiments: arms pinned to versions at creation, an optional shadow, an optional intercept."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from serving.registry.artifacts import check_name
from serving.registry.base import RegistryBase
from serving.registry.errors import ConflictError, ExperimentNotFoundError, InvalidRequestError
from serving.registry.models import Experiment, ExperimentArm
from serving.registry.state import RegistryState, Unchanged
from serving.store import ExperimentRow, utcnow

__all__ = ["ArmSpec", "ExperimentsMixin"]

ArmSpec = tuple[str, float] | Mapping[str, Any]
"""An experiment arm as given: `(model, weight)` or `{"model": ..., "weight": ...}`."""


class ExperimentsMixin(RegistryBase):
    """Experiments served under their own name (or intercepting a model name)."""

    def _arm(self, state: RegistryState, spec: ArmSpec, index: int) -> ExperimentArm:
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

    def list_experiments(self, *, active_only: bool = False) -> list[Experiment]:
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
                raise Unchanged
            row.status, row.stopped_at = "stopped", utcnow()
        return self.get_experiment(name)
