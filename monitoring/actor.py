"""The loop as a Ray actor beside the Serve app: `LoopActor` runs `LoopController.run` in a thread of a
named actor that Ray restarts when its process dies; the new incarnation waits for the dead one's lock to
go stale, takes it over and resumes the open run (see `LoopController.run`).

    handle = start_loop_actor(factory, name="tuneloop-loop", detached=True)
    ray.get(handle.status.remote())

`factory` is a picklable zero-argument callable that builds the `LoopController` inside the actor (the
registry and database connections are opened there, never pickled). `tuneloop loop --ray` uses
`tuneloop.loop_factory.ControllerFactory`; tests use `monitoring.testing.WorldControllerFactory`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from monitoring.loop import LoopController, TickResult
from monitoring.loop_store import LockHeldError

log = logging.getLogger("tuneloop.loop.actor")

DEFAULT_ACTOR_NAME = "tuneloop-loop"


class LoopActor:
    """Owns one loop controller thread; its methods are the actor's remote API."""

    def __init__(
        self,
        factory: Callable[[], LoopController],
        lock_retry_s: float = 1.0,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
    ) -> None:
        self.controller = factory()
        if metrics_port is not None:  # Prometheus scrapes the loop here (see deploy/)
            self.controller.metrics.serve(metrics_port, metrics_addr)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._ticks = 0
        self._last: TickResult | None = None
        self._error: str | None = None
        self._lock_retry_s = lock_retry_s
        self._thread = threading.Thread(target=self._run, name="tuneloop-loop", daemon=True)
        self._thread.start()

    def _on_tick(self, result: TickResult) -> None:
        self._ticks += 1
        self._last = result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.controller.run(self._stop, on_tick=self._on_tick)
                return
            except LockHeldError as exc:  # a previous incarnation's lock: wait until it is stale
                self._error = str(exc)
                self._stop.wait(self._lock_retry_s)
            except Exception as exc:  # noqa: BLE001 - keep the actor alive and say why
                log.exception("loop crashed; restarting it")
                self._error = repr(exc)
                self._stop.wait(self._lock_retry_s)

    # ------------------------------------------------------------------ remote API
    def status(self) -> dict[str, Any]:
        out = self.controller.status()
        out.update(
            {
                "actor_pid": os.getpid(),
                "actor_started_at": self.started_at,
                "ticks": self._ticks,
                "last_tick": None
                if self._last is None
                else {"state": self._last.state, "message": self._last.message},
                "thread_alive": self._thread.is_alive(),
                "last_error": self._error,
            }
        )
        return out

    def pid(self) -> int:
        return os.getpid()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop between steps (the lock is released); True when the thread ended in time."""
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def start_loop_actor(
    factory: Callable[[], LoopController],
    *,
    name: str = DEFAULT_ACTOR_NAME,
    namespace: str | None = None,
    detached: bool = False,
    max_restarts: int = -1,
    lock_retry_s: float = 1.0,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
) -> Any:
    """Create (or return the running) named loop actor in the connected Ray cluster.

    The actor asks for no CPU of its own (it waits most of the time; training runs as separate Ray tasks
    with their own resources) and is restarted by Ray without limit when its process dies."""
    import ray

    remote_cls = ray.remote(LoopActor)
    options: dict[str, Any] = {
        "name": name,
        "num_cpus": 0,
        "max_restarts": max_restarts,
        "max_concurrency": 4,  # status() answers while the loop thread works
        "get_if_exists": True,
    }
    if namespace is not None:
        options["namespace"] = namespace
    if detached:
        options["lifetime"] = "detached"
    return remote_cls.options(**options).remote(factory, lock_retry_s, metrics_port, metrics_addr)
