"""Errors raised by the evals package: each names the cause a user can fix."""

from __future__ import annotations


class EvalError(Exception):
    """Base class of every error the evals package raises on purpose."""


class SuiteError(EvalError):
    """A suite file is invalid: missing dataset, unknown metric, bad template field, bad option."""


class MetricError(EvalError):
    """A metric is unknown, misconfigured, or failed to compute."""


class EndpointError(EvalError):
    """The model endpoint could not answer a request (after retries, where retrying made sense)."""

    def __init__(
        self, message: str, *, transient: bool, status_code: int | None = None, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.transient = transient
        """Retrying later might succeed (connection problems, 429, 5xx)."""
        self.status_code = status_code
        self.unreachable = unreachable
        """No connection could be made at all (the endpoint looks down)."""


class RunDataError(EvalError):
    """Stored run results are missing, unreadable, or cannot be paired for a comparison."""


class ExperimentDataError(EvalError):
    """The request log has no usable traffic for an A/B experiment (no rows, one arm, missing tables)."""
