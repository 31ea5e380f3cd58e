"""`tuneloop serve`'s environment defaults for the Ray cluster it starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneloop.commands.serve import RAY_ENV_DEFAULTS, apply_ray_env_defaults


def test_missing_defaults_are_set_and_a_value_already_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in RAY_ENV_DEFAULTS:
        monkeypatch.setenv(key, "")  # recorded, so that whatever the test sets is undone afterwards
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.1")
    applied = apply_ray_env_defaults()
    assert "RAY_SERVE_CONTROL_LOOP_INTERVAL_S" not in applied
    assert applied == {k: v for k, v in RAY_ENV_DEFAULTS.items() if k != "RAY_SERVE_CONTROL_LOOP_INTERVAL_S"}
    assert os.environ["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1"
    assert all(os.environ[k] == v for k, v in applied.items())
    assert apply_ray_env_defaults() == {}


def test_the_control_loop_interval_is_one_ray_serve_reads() -> None:
    """The name must be the one Ray Serve reads, or the default silently does nothing."""
    import ray.serve._private.constants as constants

    source = Path(constants.__file__).read_text()
    for key in RAY_ENV_DEFAULTS:
        if key.startswith("RAY_SERVE_"):
            assert f'"{key}"' in source, key
