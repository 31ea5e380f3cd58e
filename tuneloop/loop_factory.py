"""Builds the production `LoopController` from a loop spec and the tuneloop settings, inside whichever
process runs the loop (the `tuneloop loop` process or the loop's Ray actor): a picklable recipe, not live
connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.home import service_ray_address
from monitoring.loop import LoopController, RayTraining
from monitoring.spec import LoopSpec, load_spec, parse_spec


@dataclass(frozen=True)
class ControllerFactory:
    spec: Path | dict[str, Any]
    """The loop spec: a file (relative paths against its folder) or a mapping (against the working dir)."""
    config: Path | None = None
    """tuneloop settings YAML (None: `$TUNELOOP_CONFIG` or the defaults)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted spec keys set on top of the file (`service_url`, `canary.weight`, ...)."""

    def load(self) -> tuple[Any, Any, LoopSpec]:
        """(registry, settings, spec) with the spec's `database_url` defaulting to the service's."""
        from tuneloop.commands.adapters import open_cli_registry

        registry, settings = open_cli_registry(self.config)
        overrides = {k: v for k, v in self.overrides.items() if v is not None}
        if isinstance(self.spec, Path):
            spec = load_spec(self.spec, overrides=overrides)
        else:
            spec = parse_spec({**self.spec, **overrides})
        if spec.database_url is None:
            spec = spec.model_copy(update={"database_url": settings.serving.resolved_database_url()})
        return registry, settings, spec

    def __call__(self) -> LoopController:
        from serving.models import resolve_base_model

        registry, settings, spec = self.load()
        # train in the service's Ray cluster when it runs (pre-warmed workers, one Ray), else a local one
        address = spec.ray_address or service_ray_address(settings.serving.home)
        return LoopController(
            spec,
            registry,
            base_model_path=resolve_base_model(settings.serving.base_model),
            training=RayTraining(address),
        )
