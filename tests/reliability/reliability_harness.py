"""Shared pieces of the fault suite: a replica built from real components (registry on SQLite or Postgres,
artifacts on the local filesystem, the real Litestar app) with `FakeEngine` for the model, served over real
HTTP on 127.0.0.1 (`LiveServer`: uvicorn in a thread), and a loopback TCP proxy to Postgres that a test can
cut and restore (`TcpProxy`). Fixtures wrapping them live in `conftest.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from serving.config import ServingConfig
from serving.engine.fake import FakeEngine
from serving.registry.testing import write_adapter
from serving.runtime import ServingRuntime

BASE = "SmolLM2-135M-Instruct"
ADMIN_TOKEN = "reliability-admin-token"
PG_URL = os.environ.get("TUNELOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- a fake base model on disk


def make_config(home: Path, **changes: Any) -> ServingConfig:
    fields: dict[str, Any] = {
        "home": home,
        "engine": {"kind": "fake"},
        "admin_token": ADMIN_TOKEN,
        "poll_interval_s": 0.05,
        "swap_timeout_s": 15,
    }
    fields.update(changes)
    return ServingConfig(**fields)


def adapter_folder(root: Path, seed: int) -> Path:
    return write_adapter(root / f"src-{seed}", base_model=BASE, seed=seed)


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_TOKEN}"}


# --------------------------------------------------------------------------- a replica over real HTTP


class LiveServer:
    """One replica (`ServingRuntime` + its Litestar app) served by uvicorn on 127.0.0.1 in a thread.

    The runtime starts and closes on the server's own event loop, exactly as in a Serve replica."""

    def __init__(self, runtime: ServingRuntime) -> None:
        self.runtime = runtime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            runtime.http_app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()/stop()
            self._error = exc
        finally:
            self.loop.close()

    async def _main(self) -> None:
        await self.runtime.start()
        try:
            await self.server.serve()
        finally:
            await self.runtime.close()

    def start(self, timeout: float = 30.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError("live server failed to start") from self._error
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"live server not ready within {timeout} s")

    def call(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop (e.g. `runtime.core.reconcile`) and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._error is not None:
            raise RuntimeError("live server failed") from self._error


def build_runtime(config: ServingConfig, *, step_delay_s: float = 0.0) -> ServingRuntime:
    engine = FakeEngine(BASE, max_model_len=256, step_delay_s=step_delay_s)
    return ServingRuntime.build(config, engine=engine, replica_id=f"rel-{uuid.uuid4().hex[:6]}")


# ------------------------------------------------------------------------ Postgres through a cuttable proxy


class TcpProxy:
    """A loopback TCP proxy (threads) to a real server. `cut()` closes the listener and resets every
    open connection (clients see 'connection refused' / 'connection reset', as when the database host is
    down); `restore()` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cuts = 0

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by cut()/close()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cuts += 1
        # shutdown() (not just close()) so that threads blocked in accept()/recv() wake up and the
        # kernel really drops the listener and the connections.
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.cut()


def proxied_url(proxy: TcpProxy, schema: str) -> str:
    """`PG_URL` through the proxy, with `search_path` set to `schema` on every connection."""
    from sqlalchemy.engine import make_url

    query = {"options": f"-csearch_path={schema}"}
    url = make_url(PG_URL).set(host="127.0.0.1", port=proxy.port, query=query)
    return url.render_as_string(hide_password=False)
