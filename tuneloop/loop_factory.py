"""Builds the production `LoopController` from tuneloop settings, inside whichever process runs the loop
(the `tuneloop loop` process or the loop's Ray actor): a picklable recipe, not live connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.loop import LoopController, LoopSettings


@dataclass(frozen=True)
class ControllerFactory:
    config: Path | None
    """tuneloop settings YAML (None: `$TUNELOOP_CONFIG` or the defaults)."""
    loop: dict[str, Any] = field(default_factory=dict)
    """`LoopSettings` fields; `database_url` defaults to the service's."""

    def settings(self) -> tuple[Any, Any, LoopSettings]:
        from tuneloop.commands.adapters import open_cli_registry

        registry, settings = open_cli_registry(self.config)
        raw = dict(self.loop)
        raw.setdefault("database_url", settings.serving.resolved_database_url())
        return registry, settings, LoopSettings.model_validate(raw)

    def __call__(self) -> LoopController:
        from serving.models import resolve_base_model

        registry, settings, loop_settings = self.settings()
        return LoopController(
            loop_settings, registry, base_model_path=resolve_base_model(settings.serving.base_model)
        )
