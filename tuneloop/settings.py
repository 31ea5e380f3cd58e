"""tuneloop settings: one YAML file (optional) + environment, validated before anything starts.

Resolution order: built-in defaults < `--config FILE` (or `$TUNELOOP_CONFIG`) < command-line flags.
Secrets (admin token, inference keys, database URL) may instead come from the environment or from files
(`$TUNELOOP_*_FILE`, see `serving.config`); a broken secret source is a `SettingsError` here.
The serving part is `serving.config.ServingConfig`; other areas add their sections here.

Loading goes through `common.settings`: unknown keys, bad values and missing files are a `SettingsError`
that lists every problem at once, each with its key (`serving.engine.max_loras: ...`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from common.settings import (
    ConfigModel,
    SettingsError,
    apply_overrides,
    read_yaml_mapping,
    validate_config,
)
from serving.config import ServingConfig

__all__ = ["Settings", "SettingsError", "load_settings"]


class Settings(ConfigModel):
    """The whole settings file."""

    serving: ServingConfig = Field(default_factory=ServingConfig)
    """The serving layer (`serving.config.ServingConfig`)."""
    host: str = "127.0.0.1"
    """Address the HTTP service listens on (and CLI commands call)."""
    port: int = Field(8000, ge=1, le=65535)
    """Port of the HTTP service."""


def load_settings(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """The settings from `path` (else `$TUNELOOP_CONFIG`, else the defaults) with dotted `overrides`
    (`serving.num_replicas`; None values are skipped). Raises SettingsError naming every bad key, a broken
    secret source or an unknown log format."""
    path = path or os.environ.get("TUNELOOP_CONFIG")
    data: dict[str, Any] = read_yaml_mapping(path, what="settings") if path else {}
    apply_overrides(data, overrides)
    base_dir = Path(path).expanduser().resolve().parent if path else None
    settings = validate_config(Settings, data, what="settings", base_dir=base_dir)
    try:  # secrets from env / *_FILE and the log format fail here, before anything starts
        settings.serving.resolved_api_keys()
        settings.serving.resolved_database_url()
        settings.serving.resolved_log_format()
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    return settings
