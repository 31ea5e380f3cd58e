"""Run untrusted generated Python with limits: the execution half of the code pass@1 metric.

Each program runs in `python -I` inside a fresh temporary directory with:
- CPU time, address space (memory), file size and core-dump limits (resource.setrlimit),
- a wall-clock timeout after which the whole process group is killed,
- no network: a new network namespace (`unshare -rn`) where the kernel allows it, and always an audit
  hook that refuses sockets, subprocesses, forks and writes outside the temp directory.
This is a guard against accidents and sloppy model output, not a hardened jail for hostile code; run
untrusted suites in a container as well.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SandboxStatus = Literal["passed", "failed", "timeout", "memory", "blocked"]

_GUARD = r"""
import sys, os
_ROOT = os.path.realpath(os.getcwd())
_BLOCKED = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "socket.__new__",
            "subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn",
            "os.spawn", "os.kill", "os.killpg", "pty.spawn", "ctypes.dlopen", "shutil.rmtree"}
def _guard(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        path = args[0]
        if isinstance(path, (str, bytes)) and not os.path.realpath(path).startswith(_ROOT):
            raise PermissionError(f"sandbox: writing {path!r} is not allowed")
sys.addaudithook(_guard)
del _guard
with open("program.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "program.py", "exec")
exec(_code, {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    file_size_mb: int = 16


@dataclass(frozen=True)
class SandboxOutcome:
    """What happened to one program."""

    status: SandboxStatus
    detail: str
    returncode: int | None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_available() -> bool:
    """Whether `unshare -rn` works here (user + network namespaces); probed once per process."""
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _limit_resources(limits: SandboxLimits) -> None:
    cpu = int(limits.timeout_s) + 1
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.file_size_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxOutcome:
    """Run `code` as a script under the sandbox; exit status 0 means passed."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="tuneloop-sandbox-") as tmp:
        root = Path(tmp)
        (root / "program.py").write_text(code, encoding="utf-8")
        (root / "guard.py").write_text(_GUARD, encoding="utf-8")
        command = [sys.executable, "-I", "-B", "guard.py"]
        if network_namespace_available():
            command = ["unshare", "-rn", *command]
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: _limit_resources(limits),  # noqa: PLW1509 - needed for rlimits
        )
        try:
            _, stderr_bytes = process.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return SandboxOutcome("timeout", f"killed after {limits.timeout_s:g} s", process.returncode)
        finally:
            _kill_group(process)
        stderr = stderr_bytes.decode("utf-8", errors="replace")
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if process.returncode == 0:
            return SandboxOutcome("passed", "", 0)
        if process.returncode == -signal.SIGXCPU:
            return SandboxOutcome("timeout", "CPU time limit reached", process.returncode)
        if "MemoryError" in stderr:
            return SandboxOutcome("memory", tail[:300], process.returncode)
        if "sandbox:" in stderr and "PermissionError" in stderr:
            return SandboxOutcome("blocked", tail[:300], process.returncode)
        return SandboxOutcome("failed", tail[:300], process.returncode)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
