"""ArtifactStore: atomic writes on local disk and on fsspec `memory://`, cache downloads, path confinement."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

import serving.registry.artifacts as artifacts_module
from serving.registry import ArtifactError, ArtifactStore, InvalidNameError, sha256_file
from serving.registry.testing import write_adapter


def _adapter(tmp_path: Path, seed: int = 0) -> tuple[Path, str]:
    folder = write_adapter(tmp_path / f"src-{seed}", seed=seed)
    (folder / "README.md").write_text("notes")
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.json").write_text("{}")
    return folder, sha256_file(folder / "adapter_model.safetensors")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "store", cache_dir=tmp_path / "cache")
    return ArtifactStore(f"memory://tl-{uuid.uuid4().hex[:8]}", cache_dir=tmp_path / "cache")


def test_put_then_local_path_round_trips(store: ArtifactStore, tmp_path: Path) -> None:
    src, version = _adapter(tmp_path)
    assert not store.exists("support", version)
    uri = store.put_version("support", version, src)
    assert uri == f"{store.root}/support/{version}"
    assert store.exists("support", version)
    local = store.local_path(uri)
    assert _files(local) == _files(src)
    if not store.is_local:
        assert local == tmp_path / "cache" / "support" / version
        assert store.local_path(uri) == local  # cached, no second download
    # Idempotent: same version again is a no-op returning the same URI.
    assert store.put_version("support", version, src) == uri
    assert store.delete_version("support", version)
    assert not store.exists("support", version)
    assert not local.exists()
    assert not store.delete_version("support", version)
    with pytest.raises(ArtifactError):
        store.local_path(uri)


def test_failure_mid_copy_leaves_nothing_visible_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "store")
    src, version = _adapter(tmp_path)
    real_copy = artifacts_module._copy_file
    calls = {"n": 0}

    def failing_copy(a: str, b: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_copy(a, b)

    monkeypatch.setattr(artifacts_module, "_copy_file", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        store.put_version("support", version, src)
    assert calls["n"] == 2
    assert not store.exists("support", version)
    assert list((tmp_path / "store" / "support").iterdir()) == []  # no temp folder left behind
    monkeypatch.setattr(artifacts_module, "_copy_file", real_copy)
    assert store.exists("support", version) is False
    store.put_version("support", version, src)
    assert store.exists("support", version)


def test_object_store_version_without_marker_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"memory://tl-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(root, cache_dir=tmp_path / "cache")
    src, version = _adapter(tmp_path)
    fs = fsspec.filesystem("memory")
    real_put = fs.put_file
    calls = {"n": 0}

    def failing_put(lpath: str, rpath: str, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("network down")
        real_put(lpath, rpath, **kwargs)

    monkeypatch.setattr(fs, "put_file", failing_put)
    with pytest.raises(ConnectionError):
        store.put_version("support", version, src)
    assert not store.exists("support", version)
    with pytest.raises(ArtifactError, match="never committed"):
        store.local_path(f"{root}/support/{version}")
    # A partial upload that crashed before its marker (no cleanup at all) is also invisible and overwritten.
    prefix = root.removeprefix("memory://")
    fs.pipe_file(f"/{prefix}/support/{version}/adapter_model.safetensors", b"partial")
    assert not store.exists("support", version)
    monkeypatch.setattr(fs, "put_file", real_put)
    uri = store.put_version("support", version, src)
    assert _files(store.local_path(uri)) == _files(src)


def test_corrupted_remote_weights_are_not_cached(tmp_path: Path) -> None:
    root = f"memory://tl-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(root, cache_dir=tmp_path / "cache")
    src, version = _adapter(tmp_path)
    uri = store.put_version("support", version, src)
    fs = fsspec.filesystem("memory")
    path = f"/{root.removeprefix('memory://')}/support/{version}/adapter_model.safetensors"
    original = fs.cat_file(path)
    fs.pipe_file(path, original[:-4] + b"\x00\x00\x00\x01")  # same size, different bytes
    with pytest.raises(ArtifactError, match="sha256"):
        store.local_path(uri)
    assert not (tmp_path / "cache" / "support" / version).exists()
    assert [p.name for p in (tmp_path / "cache" / "support").iterdir()] == []


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "/abs", "..", "", "UPPER", "a" * 65, "x@y", ".hidden", "a\x00b"]
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    store = ArtifactStore(tmp_path / "store")
    src, version = _adapter(tmp_path)
    with pytest.raises(InvalidNameError):
        store.put_version(name, version, src)
    assert list((tmp_path / "store").iterdir()) == []


@pytest.mark.parametrize("version", ["../../etc", "abc", "G" * 64, "a" * 63 + "/"])
def test_bad_versions_are_refused(tmp_path: Path, version: str) -> None:
    store = ArtifactStore(tmp_path / "store")
    src, _ = _adapter(tmp_path)
    with pytest.raises(InvalidNameError):
        store.put_version("support", version, src)


def test_uris_outside_the_root_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    version = "a" * 64
    for uri in (
        "/etc/passwd",
        f"{tmp_path}/other/support/{version}",
        f"{store.root}/support/../../{version}",
        f"{store.root}/support/{version}/../x",
        f"{store.root}/support",
        f"{store.root}-evil/support/{version}",
    ):
        with pytest.raises((ArtifactError, InvalidNameError)):
            store.local_path(uri)


def test_local_copy_must_hash_to_the_version(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src, _ = _adapter(tmp_path)
    with pytest.raises(ArtifactError, match="does not hash"):
        store.put_version("support", "b" * 64, src)
    assert not store.exists("support", "b" * 64)
    assert list((tmp_path / "store" / "support").iterdir()) == []


def test_symlinks_in_source_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src, version = _adapter(tmp_path)
    (src / "leak").symlink_to("/etc/hostname")
    with pytest.raises(ArtifactError, match="symlink"):
        store.put_version("support", version, src)
    assert not store.exists("support", version)
