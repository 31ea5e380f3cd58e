"""tuneloop settings: one YAML file (optional) + environment, validated before anything starts.

Resolution order: built-in defaults < `--config FILE` (or `$TUNELOOP_CONFIG`) < command-line flags.
Secrets (admin token, inference keys, database URL) may instead come from the environment or from files
(`$TUNELOOP_*_FILE`, see `serving.config`); a broken secret source is a `SettingsError` here.
The serving part is `serving.config.ServingConfig`; other areas add their sections here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.config import ServingConfig


class SettingsError(ValueError):
    """The settings file is missing, unreadable or invalid (message names the key)."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serving: ServingConfig = Field(default_factory=ServingConfig)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    path = path or os.environ.get("TUNELOOP_CONFIG")
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise SettingsError(f"settings file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot parse {p}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SettingsError(f"{p}: the top level must be a mapping")
        data = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SettingsError(f"invalid setting '{key}': {err['msg']}") from exc
    try:  # secrets from env / *_FILE and the log format fail here, before anything starts
        settings.serving.resolved_api_keys()
        settings.serving.resolved_database_url()
        settings.serving.resolved_log_format()
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    return settings
