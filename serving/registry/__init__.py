"""The adapter registry: versioned LoRA adapters (content-addressed), aliases with history, A/B
experiments, model-name resolution, static adapter validation and artifact storage on fsspec.

Typical wiring::

    db = Database("sqlite:///~/.cache/tuneloop/tuneloop.db")
    registry = AdapterRegistry(db, ArtifactStore("~/.cache/tuneloop/adapters"), "SmolLM2-135M-Instruct",
                               {"q_proj", "k_proj", "v_proj", "o_proj"}, max_lora_rank=64)
    version = registry.register("out/adapter", "support", alias="challenger")
    registry.resolve("support@challenger")   # -> ResolvedModel(kind="adapter", version=version, ...)
"""

from serving.registry.artifacts import ArtifactStore, check_name, check_version, sha256_file
from serving.registry.errors import (
    AdapterValidationError,
    AliasNotFoundError,
    AmbiguousVersionError,
    ArtifactError,
    ConflictError,
    ExperimentNotFoundError,
    InvalidNameError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RegistryError,
    RequestNotFoundError,
    StorageFullError,
    VersionNotFoundError,
)
from serving.registry.models import (
    AdapterVersion,
    AliasEvent,
    Experiment,
    ExperimentArm,
    ReplicaStatus,
    ResolvedModel,
)
from serving.registry.registry import CHAMPION, AdapterRegistry, ArmSpec, check_alias
from serving.registry.validation import (
    DEFAULT_MAX_ADAPTER_BYTES,
    BaseModelSpec,
    SmokeResult,
    ValidationReport,
    validate_adapter,
)

__all__ = [
    "CHAMPION",
    "DEFAULT_MAX_ADAPTER_BYTES",
    "AdapterRegistry",
    "AdapterValidationError",
    "AdapterVersion",
    "AliasEvent",
    "AliasNotFoundError",
    "AmbiguousVersionError",
    "ArmSpec",
    "ArtifactError",
    "ArtifactStore",
    "BaseModelSpec",
    "ConflictError",
    "Experiment",
    "ExperimentArm",
    "ExperimentNotFoundError",
    "InvalidNameError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotFoundError",
    "RegistryError",
    "ReplicaStatus",
    "RequestNotFoundError",
    "ResolvedModel",
    "SmokeResult",
    "StorageFullError",
    "ValidationReport",
    "VersionNotFoundError",
    "check_alias",
    "check_name",
    "check_version",
    "sha256_file",
    "validate_adapter",
]
