"""A corrupt adapter in the registry: the stored files of a registered version are damaged afterwards
(weights bytes changed in place, weights truncated, weights file missing, config garbage, whole version
folder gone). Real registry (SQLite) and artifact store on disk, real app over HTTP, FakeEngine.

Proves:
* moving an alias to the damaged version is refused with a clear 409 (`adapter_rejected`, naming the
  artifact check) - before the fix, changed bytes were loaded and served, and a missing folder made the
  replica's whole reconcile loop fail until the swap timed out (503);
* the alias keeps its previous version, which keeps serving;
* the base model and other adapters keep serving, with no 5xx for any unrelated request meanwhile;
* a replica that starts while the *champion's* files are damaged refuses that version only, becomes
  ready, and serves everything else.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_harness import BASE, LiveServer, adapter_folder, admin_headers, build_runtime, make_config

from serving.registry.artifacts import WEIGHTS_FILE

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


def flip_bytes(folder: Path) -> None:
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    weights.write_bytes(bytes(data))


def truncate(folder: Path) -> None:
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def garbage_config(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("{not json")


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "weights_bytes_changed": flip_bytes,
    "weights_truncated": truncate,
    "weights_missing": lambda folder: (folder / WEIGHTS_FILE).unlink(),
    "config_garbage": garbage_config,
    "folder_missing": shutil.rmtree,
}


class Background:
    """Unrelated traffic (base model + another adapter) in a thread; records every non-200."""

    def __init__(self, url: str, models: list[str]) -> None:
        self.url, self.models = url, models
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                model = self.models[self.sent % len(self.models)]
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
                r = client.post("/v1/chat/completions", json=body)
                self.sent += 1
                if r.status_code != 200:
                    self.errors.append(f"{model}: {r.status_code} {r.text[:200]}")

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_version_is_refused_and_the_alias_keeps_serving(
    corruption: str, tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    runtime = build_runtime(make_config(tmp_path / "home"))
    registry = runtime.registry
    v1 = registry.register(adapter_folder(tmp_path, 1), "support", alias="champion")
    billing = registry.register(adapter_folder(tmp_path, 5), "billing", alias="champion")
    v2 = registry.register(adapter_folder(tmp_path, 2), "support")
    server = live_server(runtime)
    CORRUPTIONS[corruption](Path(v2.uri))

    with Background(server.url, [BASE, "billing"]) as background:
        r = httpx.put(
            f"{server.url}/admin/adapters/support/aliases/champion",
            json={"version": v2.version},
            headers=admin_headers(),
            timeout=60,
        )
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "adapter_rejected" and "artifact check failed" in error["message"]
        server.call(runtime.core.reconcile)
        chat = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200 and chat.headers["x-tuneloop-served-by"] == v1.short_ref
    assert background.sent > 0 and background.errors == []
    assert registry.get("support", "champion").version == v1.version
    ready = httpx.get(f"{server.url}/ready").json()
    assert v1.ref in ready["loaded_adapters"] and billing.ref in ready["loaded_adapters"]
    assert v2.ref not in ready["loaded_adapters"]


def test_replica_starting_with_a_corrupt_champion_serves_everything_else(
    tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    first = build_runtime(make_config(tmp_path / "home"))
    v1 = first.registry.register(adapter_folder(tmp_path, 1), "support", alias="champion")
    billing = first.registry.register(adapter_folder(tmp_path, 5), "billing", alias="champion")
    first.db.dispose()
    first.request_log.close()
    flip_bytes(Path(v1.uri))

    runtime = build_runtime(make_config(tmp_path / "home"))
    server = live_server(runtime)  # becomes ready although one desired version is refused
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready["ready"] and billing.ref in ready["loaded_adapters"]
    assert "artifact check failed" in ready["failed_adapters"][v1.ref]
    for model in (BASE, "billing"):
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200, r.text
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code < 500 or r.status_code == 503, r.text  # refused explicitly, never served corrupt
    assert r.status_code != 200
