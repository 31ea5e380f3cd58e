"""The training error hierarchy: every failure a user can cause has a type, a stable `code` and a message
that names the cause (the config key, the file, the row reason).

`TrainingResult.error.code` carries the same codes, so callers that only see the structured result (the
monitoring loop, the CLI) can branch on them without parsing messages.
"""

from __future__ import annotations

from common.settings import SettingsError

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "OutOfDiskError",
    "TrainingCancelled",
    "TrainingDiverged",
    "TrainingError",
    "TrainingTimeout",
]


class TrainingError(Exception):
    """Base class of all training errors."""

    code = "training_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(TrainingError, SettingsError):
    """The training config is invalid or names something that does not exist (the message names the key).

    A `common.settings.SettingsError` (so a `ValueError`): validation errors list every problem in
    `problems`, one line each with its field path."""

    code = "invalid_config"

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class DataError(TrainingError, ValueError):
    """A dataset source is missing, empty, unreadable, has the wrong columns, or nothing survives cleaning."""

    code = "invalid_data"


class TrainingDiverged(TrainingError):
    """The loss became NaN/inf or exploded; the run was stopped and produced no adapter."""

    code = "diverged"


class TrainingCancelled(TrainingError):
    """The run was cancelled by its caller."""

    code = "cancelled"


class TrainingTimeout(TrainingError):
    """The run exceeded `runtime.timeout_s` (or got no worker within `runtime.start_timeout_s`)."""

    code = "timed_out"


class ArtifactError(TrainingError):
    """Writing or verifying the adapter artifact failed; nothing was moved into place."""

    code = "artifact_error"


class OutOfDiskError(ArtifactError):
    """The disk filled up (or is too full to start) while writing the run folder."""

    code = "out_of_disk"
