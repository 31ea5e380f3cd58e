"""The adapter registry on S3: moto's S3 server on a loopback port stands in for S3, reached through s3fs
with `registry_storage_options` (endpoint + credentials), exactly as a MinIO/S3 deployment is configured.

register → validate → read back (download into the cache) → alias → remove, a half-written upload that
is never visible, and the registry built from a `ServingConfig` the way a replica builds it.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

moto_server = pytest.importorskip(
    "moto.server", reason="moto[server] is not installed (dev extra): no local S3 stand-in"
)
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (dev extra): no S3 filesystem for fsspec")

from serving.config import ServingConfig  # noqa: E402
from serving.logging_setup import MASK, redact  # noqa: E402
from serving.registry import AdapterRegistry, ArtifactError, ArtifactStore, sha256_file  # noqa: E402
from serving.registry.errors import AdapterValidationError  # noqa: E402
from serving.registry.testing import SMOLLM2_MODULES, write_adapter  # noqa: E402
from serving.runtime import open_registry  # noqa: E402
from serving.store import Database  # noqa: E402

BASE = "SmolLM2-135M-Instruct"
BUCKET = "tuneloop-adapters"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        fs = s3fs.S3FileSystem(
            endpoint_url=endpoint, key="tl-test-key", secret="tl-test-secret", skip_instance_cache=True
        )
        fs.mkdir(BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture()
def storage_options(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return {"endpoint_url": s3_endpoint, "key": "tl-test-key", "secret": "tl-test-secret"}


@pytest.fixture()
def root() -> str:
    return f"s3://{BUCKET}/registry-{uuid.uuid4().hex[:8]}"


def _registry(tmp_path: Path, root: str, options: dict[str, Any]) -> AdapterRegistry:
    store = ArtifactStore(root, cache_dir=tmp_path / "cache", storage_options=options)
    return AdapterRegistry(
        Database(f"sqlite:///{tmp_path / 'meta.db'}"),
        store,
        base_model_id=BASE,
        base_modules=set(SMOLLM2_MODULES),
        max_lora_rank=16,
    )


def test_register_validate_read_back_and_remove_on_s3(
    tmp_path: Path, root: str, storage_options: dict[str, Any]
) -> None:
    registry = _registry(tmp_path, root, storage_options)
    assert not registry.artifacts.is_local
    src = write_adapter(tmp_path / "src", base_model=BASE, seed=1)
    (src / "README.md").write_text("notes")
    v1 = registry.register(src, "support", alias="champion")
    assert v1.uri == f"{root}/support/{v1.version}"
    # the objects really are in the bucket, with the commit marker written last
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options)
    key = v1.uri.removeprefix("s3://")
    assert sorted(Path(p).name for p in fs.ls(key)) == [
        "README.md",
        "_COMMITTED",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert json.loads(fs.cat_file(f"{key}/_COMMITTED"))["version"] == v1.version
    # read back: a verified local copy in the cache, byte-identical
    local = registry.local_path(v1)
    assert local.is_relative_to(tmp_path / "cache")
    assert (local / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()
    assert registry.resolve("support").version == v1
    # a second registry (another replica) over the same bucket and database sees the same version
    other = AdapterRegistry(
        registry.db,
        ArtifactStore(root, cache_dir=tmp_path / "cache-2", storage_options=storage_options),
        base_model_id=BASE,
        base_modules=set(SMOLLM2_MODULES),
        max_lora_rank=16,
    )
    champion = other.resolve("support@champion").version
    assert champion is not None
    assert sha256_file(other.local_path(champion) / "adapter_model.safetensors") == v1.version
    # invalid adapters never reach the bucket
    bad = write_adapter(tmp_path / "bad", base_model=BASE, seed=2, r=64)
    with pytest.raises(AdapterValidationError):
        registry.register(bad, "support")
    assert [Path(p).name for p in fs.ls(f"{key.rsplit('/', 1)[0]}")] == [v1.version]
    # remove: a second version takes the alias, then the first is deleted from the bucket and the cache
    v2 = registry.register(write_adapter(tmp_path / "src2", base_model=BASE, seed=3), "support")
    registry.set_alias("support", "champion", v2.version)
    registry.remove("support", v1.version)
    fs.invalidate_cache()
    assert not fs.exists(key)
    assert not registry.artifacts.exists("support", v1.version)
    assert not (tmp_path / "cache" / "support" / v1.version).exists()
    assert registry.resolve("support").version.version == v2.version  # type: ignore[union-attr]


def test_a_half_written_upload_is_never_visible(
    tmp_path: Path, root: str, storage_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(root, cache_dir=tmp_path / "cache", storage_options=storage_options)
    src = write_adapter(tmp_path / "src", base_model=BASE, seed=4)
    version = sha256_file(src / "adapter_model.safetensors")
    uri = store.uri_for("support", version)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options)
    key = uri.removeprefix("s3://")
    # 1) a crash after the weights were uploaded but before the marker (no cleanup ran at all)
    fs.put_file(str(src / "adapter_model.safetensors"), f"{key}/adapter_model.safetensors")
    assert fs.exists(f"{key}/adapter_model.safetensors")
    assert not store.exists("support", version)
    with pytest.raises(ArtifactError, match="never committed"):
        store.local_path(uri)
    # 2) an upload that fails midway cleans up after itself and stays invisible
    real_put = store._fs.put_file
    calls = {"n": 0}

    def failing_put(lpath: str, rpath: str, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("connection reset by peer")
        real_put(lpath, rpath, **kwargs)

    monkeypatch.setattr(store._fs, "put_file", failing_put)
    with pytest.raises(ConnectionError):
        store.put_version("support", version, src)
    assert not store.exists("support", version)
    fs.invalidate_cache()
    assert not fs.exists(f"{key}/_COMMITTED")
    # 3) the next write replaces the leftovers and commits
    monkeypatch.setattr(store._fs, "put_file", real_put)
    assert store.put_version("support", version, src) == uri
    assert store.exists("support", version)
    assert (store.local_path(uri) / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()


def test_serving_config_passes_storage_options_to_the_registry(
    tmp_path: Path, root: str, storage_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
    monkeypatch.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    config = ServingConfig(
        home=tmp_path / "home", registry_root=root, registry_storage_options=storage_options
    )
    db, registry = open_registry(config, tmp_path / BASE, BASE)
    assert redact(f"secret {storage_options['secret']}") == f"secret {MASK}"  # never logged in clear
    try:
        version = registry.register(write_adapter(tmp_path / "src", base_model=BASE, seed=5), "billing")
        assert version.uri.startswith(f"{root}/billing/")
        assert registry.artifacts.exists("billing", version.version)
        assert (registry.local_path(version) / "adapter_config.json").is_file()
    finally:
        db.dispose()
