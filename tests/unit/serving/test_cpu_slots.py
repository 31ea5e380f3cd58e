"""CPU slots for several vLLM CPU engines on one machine: the partition of the cores, claims that exclude
each other while held and come free when released (or when the holder dies), and when there is no slot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.config import ServingConfig
from serving.engine.cpu_slots import claim_cpu_slot, partition, slot_folder
from serving.runtime import cpu_slots


@pytest.mark.parametrize(
    ("cpus", "slots", "expected"),
    [
        ([0, 1], 2, [[0], [1]]),
        ([0, 1, 2, 3, 4], 2, [[0, 1, 2], [3, 4]]),
        ([4, 5, 6, 7], 4, [[4], [5], [6], [7]]),
        ([0, 1, 2], 1, [[0, 1, 2]]),
    ],
)
def test_partition_is_contiguous_and_even(cpus: list[int], slots: int, expected: list[list[int]]) -> None:
    assert partition(cpus, slots) == expected


def test_claims_exclude_each_other_and_free_on_release(tmp_path: Path) -> None:
    first = claim_cpu_slot(2, tmp_path, cpus=[0, 1, 2, 3])
    second = claim_cpu_slot(2, tmp_path, cpus=[0, 1, 2, 3])
    assert first is not None and second is not None
    assert (first.index, first.bind) == (0, "0,1") and (second.index, second.bind) == (1, "2,3")
    assert claim_cpu_slot(2, tmp_path, cpus=[0, 1, 2, 3]) is None  # a third replica: no slot, runs unbound
    first.release()
    again = claim_cpu_slot(2, tmp_path, cpus=[0, 1, 2, 3])
    assert again is not None and again.index == 0
    again.release()
    second.release()


def test_a_dead_holders_slot_is_free(tmp_path: Path) -> None:
    holder = (
        "import sys; from pathlib import Path; from serving.engine.cpu_slots import claim_cpu_slot; "
        "s = claim_cpu_slot(2, Path(sys.argv[1]), cpus=[0, 1]); print(s.index, flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "0"
    mine = claim_cpu_slot(2, tmp_path, cpus=[0, 1])
    assert mine is not None and mine.index == 1  # slot 0 is held by the other process
    proc.kill()
    proc.wait()
    replacement = claim_cpu_slot(2, tmp_path, cpus=[0, 1])
    assert replacement is not None and replacement.index == 0  # freed by the holder's death
    mine.release()
    replacement.release()


def test_no_partitioning_for_one_slot_or_too_few_cores(tmp_path: Path) -> None:
    assert claim_cpu_slot(1, tmp_path, cpus=[0, 1]) is None
    assert claim_cpu_slot(3, tmp_path, cpus=[0, 1]) is None


def test_slots_follow_replicas_and_the_setting(tmp_path: Path) -> None:
    assert cpu_slots(ServingConfig(home=tmp_path)) is None  # one replica
    assert cpu_slots(ServingConfig(home=tmp_path, num_replicas=2)) == 2
    off = ServingConfig(home=tmp_path, num_replicas=2, engine={"cpu_partition": "off"})
    assert cpu_slots(off) is None
    assert slot_folder("a") != slot_folder("b") and slot_folder("a") == slot_folder("a")
