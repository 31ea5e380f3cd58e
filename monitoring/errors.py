"""Errors raised by the monitoring package on purpose: each names the cause a user can fix."""

from __future__ import annotations


class MonitoringError(Exception):
    """Base class of every error the monitoring package raises on purpose."""


class ScorerConfigError(MonitoringError):
    """A scorer is unknown or misconfigured (unknown kind, unknown option, duplicate name, bad value)."""


class ScorerError(MonitoringError):
    """Scoring one request failed (e.g. the judge endpoint did not answer); the request stays unscored."""


class DriftInputError(MonitoringError):
    """A drift check got unusable input (too few samples, mismatched dimensions, NaN, unknown detector)."""


class PolicyError(MonitoringError):
    """A trigger policy file is missing, unreadable or invalid."""
