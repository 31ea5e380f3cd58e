"""Child process for the loop kill test: runs the real `LoopController.run` on a shared `LoopWorld`
(real registry + SQLite; training takes `train_delay_s`, the gate is faked) and prints each tick's state.

    python loop_kill_worker.py WORLD_DIR TRAIN_DELAY_S
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from monitoring.testing import LoopWorld


def main() -> None:
    world = LoopWorld(Path(sys.argv[1]), train_delay_s=float(sys.argv[2]))
    controller = world.controller(windows__check_interval_s=0.2, lock_stale_after_s=2.0)
    stop = threading.Event()
    controller.run(stop, on_tick=lambda result: print(f"STATE {result.state}", flush=True))


if __name__ == "__main__":
    main()
