"""The local state folder (`$TUNELOOP_HOME`, else `~/.cache/tuneloop`, resolved here and nowhere else), and
the file in it through which a running service tells other tuneloop processes (the loop, `tuneloop train`)
which Ray cluster to join."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = [
    "HOME_ENV",
    "clear_service_ray_address",
    "service_ray_address",
    "tuneloop_home",
    "write_service_ray_address",
]

HOME_ENV = "TUNELOOP_HOME"


def tuneloop_home() -> Path:
    """`$TUNELOOP_HOME` (with `~` expanded), else `~/.cache/tuneloop`. Not created here."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tuneloop"


RAY_ADDRESS_FILE = "ray-address.json"


def write_service_ray_address(home: Path, address: str) -> Path:
    """Record (atomically) that the service of `home` runs in the Ray cluster at `address`, with its pid."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / RAY_ADDRESS_FILE
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}), encoding="utf-8")
    tmp.replace(target)
    return target


def clear_service_ray_address(home: Path) -> None:
    """Forget the address when this process wrote it (the service is stopping)."""
    target = home / RAY_ADDRESS_FILE
    try:
        if json.loads(target.read_text(encoding="utf-8")).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError):
        pass


def service_ray_address(home: Path) -> str | None:
    """The Ray address of the service running for `home`, when one is (its process is alive); else None."""
    try:
        info = json.loads((home / RAY_ADDRESS_FILE).read_text(encoding="utf-8"))
        pid, address = int(info["pid"]), str(info["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return address
