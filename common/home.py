"""The local state folder: `$TUNELOOP_HOME`, else `~/.cache/tuneloop` (resolved here and nowhere else)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "tuneloop_home"]

HOME_ENV = "TUNELOOP_HOME"


def tuneloop_home() -> Path:
    """`$TUNELOOP_HOME` (with `~` expanded), else `~/.cache/tuneloop`. Not created here."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tuneloop"
