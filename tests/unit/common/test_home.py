"""common.home: the state folder, and the file through which a running service names its Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.home import (
    RAY_ADDRESS_FILE,
    clear_service_ray_address,
    service_ray_address,
    tuneloop_home,
    write_service_ray_address,
)


def test_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "h"))
    assert tuneloop_home() == tmp_path / "h"
    monkeypatch.delenv("TUNELOOP_HOME")
    assert tuneloop_home() == Path.home() / ".cache" / "tuneloop"


def test_address_written_read_and_cleared_by_its_writer(tmp_path: Path) -> None:
    assert service_ray_address(tmp_path) is None
    write_service_ray_address(tmp_path, "127.0.0.1:6379")
    assert service_ray_address(tmp_path) == "127.0.0.1:6379"
    clear_service_ray_address(tmp_path)
    assert service_ray_address(tmp_path) is None and not (tmp_path / RAY_ADDRESS_FILE).exists()


def test_a_dead_service_address_is_ignored_and_not_cleared_by_others(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / RAY_ADDRESS_FILE).write_text(
        json.dumps({"address": "10.0.0.1:6379", "pid": int(dead.stdout)})
    )
    assert service_ray_address(tmp_path) is None  # its process is gone: never join a dead cluster
    (tmp_path / RAY_ADDRESS_FILE).write_text(json.dumps({"address": "x:1", "pid": os.getppid()}))
    clear_service_ray_address(tmp_path)  # written by another process: left alone
    assert service_ray_address(tmp_path) == "x:1"
    (tmp_path / RAY_ADDRESS_FILE).write_text("not json")
    assert service_ray_address(tmp_path) is None
