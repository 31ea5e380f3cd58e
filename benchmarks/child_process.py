"""How the training benchmarks run a timed side in a Python process of its own and read its figures back.

The parent starts `python -m <benchmark module> --child ...` (`run`); the child prints its figures as
`TAG <json>` lines (`report`), `RESULT` for the main one; the parent reads them from the captured stdout
(`reported`, `result_of`). A side in its own process has its own peak RSS and CPU time, and
nothing the parent imported. Standard library only: the child imports this module too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository root; children run from here."""
RESULT = "RESULT"
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Environment every child runs with (on top of the parent's)."""


def report(value: Any, tag: str = RESULT) -> None:
    """In the child: hand `value` to the parent as a `TAG <json>` line on stdout."""
    print(f"{tag} " + json.dumps(value), flush=True)


def run(
    module: str, args: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module --child *args` from the repository root and wait for it (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _tagged(proc: subprocess.CompletedProcess[str], tag: str) -> list[str]:
    return [x for x in proc.stdout.splitlines() if x.startswith(f"{tag} ")]


def reported(proc: subprocess.CompletedProcess[str], tag: str) -> Any | None:
    """The value of the child's last `tag` line; None when it printed none."""
    lines = _tagged(proc, tag)
    return json.loads(lines[-1][len(tag) + 1 :]) if lines else None


def result_of(proc: subprocess.CompletedProcess[str], what: str) -> Any:
    """The child's `RESULT`; a failed child, or one without a result, ends the benchmark (SystemExit with
    the tails of its output)."""
    if proc.returncode != 0 or not _tagged(proc, RESULT):
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return reported(proc, RESULT)
