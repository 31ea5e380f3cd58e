"""Typed errors of the adapter registry and the request log.

Every error carries a human `message`, a machine `code` and the HTTP `status_code` the API layer
answers with (`serving.api.errors.api_error` reads it; nothing else does). `openai_error()` renders the
envelope for callers outside HTTP.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base class: something the registry refused or could not do."""

    status_code: int = 500
    code: str = "registry_error"
    error_type: str = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def openai_error(self) -> dict[str, Any]:
        """`{"error": {"message", "type", "param", "code"}}` as OpenAI-compatible servers answer."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(RegistryError):
    """The caller sent something malformed (400)."""

    status_code = 400
    code = "invalid_request"
    error_type = "invalid_request_error"


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
    """Something named does not exist (404)."""

    status_code = 404
    code = "not_found"
    error_type = "invalid_request_error"


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
    """The change conflicts with the current state (409), e.g. removing a version an alias points at."""

    status_code = 409
    code = "conflict"
    error_type = "invalid_request_error"


class ArtifactError(RegistryError):
    """The artifact store failed or holds something unexpected (500)."""

    code = "artifact_error"


class StorageFullError(ArtifactError):
    """The adapter store ran out of space (ENOSPC/EDQUOT) while writing a version; nothing was stored.
    An operational condition, not a bug: the API answers 507 with this message."""

    status_code = 507
    code = "insufficient_storage"
    expose = True
    """Its message is sent to the client (other 5xx registry errors answer 'Internal server error.')."""
