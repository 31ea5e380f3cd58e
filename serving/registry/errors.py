"""Typed errors of the adapter registry and the request log.

Every error carries a human `message` and a machine `code`; none knows about HTTP: the API layer's one
table (`serving.api.errors.REGISTRY_STATUS`) gives each family its status.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class: something the registry refused or could not do."""

    code: str = "registry_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequestError(RegistryError):
    """The caller sent something malformed."""

    code = "invalid_request"


class InvalidNameError(InvalidRequestError):
    """A name, alias or version reference does not have the allowed form."""

    code = "invalid_name"


class AdapterValidationError(InvalidRequestError):
    """An adapter folder failed static validation; `code` names the rule (e.g. 'pickle_file')."""

    code = "adapter_validation_failed"

    def __init__(self, message: str, *, code: str, path: str | None = None) -> None:
        super().__init__(message, code=code)
        self.path = path


class AmbiguousVersionError(InvalidRequestError):
    """A version prefix matches more than one version."""

    code = "ambiguous_version"

    def __init__(self, message: str, *, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message, param="model")
        self.candidates = candidates


class NotFoundError(RegistryError):
    """Something named does not exist."""

    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """A model name resolves to nothing servable."""

    code = "model_not_found"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, param="model")


class VersionNotFoundError(ModelNotFoundError):
    """No (active) version of the adapter matches the reference."""


class AliasNotFoundError(ModelNotFoundError):
    """The adapter has no such alias (also: a bare adapter name without a `champion`)."""


class ExperimentNotFoundError(ModelNotFoundError):
    """No experiment of that name (or it is stopped, where an active one is needed)."""


class RequestNotFoundError(NotFoundError):
    """Feedback names a request id that was never logged."""

    code = "request_not_found"


class ConflictError(RegistryError):
    """The change conflicts with the current state, e.g. removing a version an alias points at."""

    code = "conflict"


class ArtifactError(RegistryError):
    """The artifact store failed or holds something unexpected."""

    code = "artifact_error"


class StorageFullError(ArtifactError):
    """The adapter store ran out of space (ENOSPC/EDQUOT) while writing a version; nothing was stored.
    An operational condition, not a bug: its message is shown to the client."""

    code = "insufficient_storage"
    expose = True
    """Its message is sent to the client (other 5xx registry errors answer 'Internal server error.')."""
