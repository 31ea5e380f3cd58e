"""`TrainingResult`: the structured outcome of a run - success with the adapter folder and manifest, or a
failure with a stable error code (see `training.errors`) and a message naming the cause."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    OutOfDiskError,
    TrainingCancelled,
    TrainingDiverged,
    TrainingError,
    TrainingTimeout,
)

__all__ = ["RunStatus", "TrainingFailure", "TrainingResult"]

RunStatus = Literal["succeeded", "failed", "cancelled", "timed_out"]
_ERRORS: dict[str, type[TrainingError]] = {
    cls.code: cls
    for cls in (
        ConfigError,
        DataError,
        TrainingDiverged,
        TrainingCancelled,
        TrainingTimeout,
        ArtifactError,
        OutOfDiskError,
    )
}


@dataclass(frozen=True)
class TrainingFailure:
    code: str
    """invalid_config | invalid_data | diverged | cancelled | timed_out | artifact_error | out_of_disk |
    training_error | internal_error"""
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class TrainingResult:
    status: RunStatus
    run_id: str
    name: str
    run_dir: Path | None = None
    """The final run folder (only on success)."""
    adapter_dir: Path | None = None
    """The PEFT adapter folder peft and vLLM load (only on success)."""
    manifest: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: TrainingFailure | None = None
    device: str | None = None
    duration_s: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> TrainingResult:
        """Return self on success; raise the matching TrainingError subclass otherwise."""
        if self.ok:
            return self
        assert self.error is not None
        raise _ERRORS.get(self.error.code, TrainingError)(self.error.message)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("run_dir", "adapter_dir"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out
