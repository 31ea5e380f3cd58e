"""Disk full while an adapter is written into the registry (POST /admin/adapters, real app over HTTP).

Two ways to fill the disk:
* `tmpfs`: the registry root is a real 64 KiB tmpfs, so the kernel itself answers ENOSPC in the middle of
  copying the weights (needs permission to mount; skipped otherwise);
* `injected`: the store's lowest write step (`serving.registry.artifacts._copy_file`) writes half of the
  file and then raises `OSError(ENOSPC)` - runs everywhere.

Proves: the client gets a clear 507 `insufficient_storage` naming the store (before the fix: a bare 500
"Internal server error"); nothing half-written is visible - no version row, no version folder, no temp
folder left in the store; the replica keeps serving; once space is available the same registration works.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from reliability_harness import BASE, LiveServer, admin_headers, build_runtime, make_config

from serving.registry.testing import write_adapter

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


@pytest.fixture(params=["tmpfs", "injected"])
def full_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A registry root where writing a ~150 KiB adapter runs out of space mid-copy."""
    root = tmp_path / "store"
    root.mkdir()
    if request.param == "tmpfs":
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        try:
            yield root
        finally:
            subprocess.run(["umount", "-l", str(root)], check=False)
        return

    import serving.registry.artifacts as artifacts

    real_copy = artifacts._copy_file

    failed: list[str] = []

    def copy_then_fill_disk(src: str, dst: str) -> None:
        if failed or not dst.endswith(artifacts.WEIGHTS_FILE):  # fails once, on the first weights copy
            real_copy(src, dst)
            return
        failed.append(dst)
        data = Path(src).read_bytes()
        with open(dst, "wb") as out:
            out.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    monkeypatch.setattr(artifacts, "_copy_file", copy_then_fill_disk)
    yield root
    monkeypatch.setattr(artifacts, "_copy_file", real_copy)


def test_disk_full_on_adapter_write_leaves_nothing_half_written(
    full_store: Path, tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    incoming = tmp_path / "incoming"
    big = write_adapter(incoming / "big", base_model=BASE, seed=7, hidden=512, layers=4)
    assert (big / "adapter_model.safetensors").stat().st_size > 100_000
    config = make_config(
        tmp_path / "home", registry_root=str(full_store), adapter_import_roots=[str(incoming)]
    )
    runtime = build_runtime(config)
    server = live_server(runtime)

    r = httpx.post(
        f"{server.url}/admin/adapters",
        json={"path": str(big), "name": "support", "alias": "champion"},
        headers=admin_headers(),
        timeout=60,
    )
    assert r.status_code == 507, r.text
    error = r.json()["error"]
    assert error["code"] == "insufficient_storage"
    assert "no space left" in error["message"] and str(full_store) in error["message"]

    assert runtime.registry.list(include_retired=True) == []  # no version row
    assert httpx.get(f"{server.url}/admin/adapters", headers=admin_headers()).json()["data"] == []
    leftovers = [p.relative_to(full_store).as_posix() for p in full_store.rglob("*") if p.is_file()]
    assert leftovers == []  # no version folder, no temp folder, no partial file
    assert not any(p.name.startswith(".tmp-") for p in full_store.rglob("*"))
    chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": BASE, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200  # the replica keeps serving

    small = write_adapter(incoming / "small", base_model=BASE, seed=8)  # fits: space is available again
    r = httpx.post(
        f"{server.url}/admin/adapters",
        json={"path": str(small), "name": "support", "alias": "champion"},
        headers=admin_headers(),
        timeout=60,
    )
    assert r.status_code == 201, r.text
    served = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert served.status_code == 200 and served.headers["x-tuneloop-served-by"].startswith("support@")
