"""CPU partitioning for several vLLM CPU engines on one machine.

vLLM's CPU backend binds its OpenMP threads to every core it may use (`VLLM_CPU_OMP_THREADS_BIND=auto`).
Two replicas on one machine then run two thread teams on the same cores, and their spin-waiting OpenMP
barriers thrash: on 2 cores two replicas held about half the requests/s of one
(`benchmarks/results/serving_load.md`). Here each replica claims a *slot* — an `flock`ed file in a folder
shared by the replicas of one service on this machine — and binds its engine to that slot's cores. The
lock is held for the life of the process, so the slot of a replica that dies is free for the replica Serve
starts in its place.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["CpuSlot", "claim_cpu_slot", "partition", "slot_folder"]


@dataclass
class CpuSlot:
    index: int
    cpus: list[int]
    handle: IO[str]
    """The open lock file; the slot is held while it stays open."""

    @property
    def bind(self) -> str:
        """The value for `VLLM_CPU_OMP_THREADS_BIND` (a comma list of core ids)."""
        return ",".join(str(c) for c in self.cpus)

    def release(self) -> None:
        self.handle.close()


def partition(cpus: list[int], slots: int) -> list[list[int]]:
    """`cpus` cut into `slots` contiguous groups whose sizes differ by at most one."""
    if slots < 1:
        raise ValueError("slots must be >= 1")
    size, extra = divmod(len(cpus), slots)
    groups, start = [], 0
    for i in range(slots):
        end = start + size + (1 if i < extra else 0)
        groups.append(cpus[start:end])
        start = end
    return groups


def slot_folder(service_key: str) -> Path:
    """The per-machine folder where the replicas of one service (named by `service_key`) claim slots."""
    digest = hashlib.sha256(service_key.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tuneloop-cpu-slots-{digest}"


def claim_cpu_slot(slots: int, folder: Path, cpus: list[int] | None = None) -> CpuSlot | None:
    """Claim the first free of `slots` slots over `cpus` (default: the cores this process may run on).

    None when partitioning makes no sense (one slot, fewer cores than slots) or every slot is taken (more
    replicas on this machine than slots: that one runs unbound, as without partitioning)."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    if slots <= 1 or len(cpus) < slots:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for index, group in enumerate(partition(cpus, slots)):
        handle = (folder / f"slot-{index}.lock").open("a", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return CpuSlot(index, group, handle)
    return None
