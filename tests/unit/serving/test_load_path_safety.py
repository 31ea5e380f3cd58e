"""What reaches the engine: admin import paths stay under their roots (symlinks too), and a tampered
object-store manifest cannot smuggle a pickle file or a path outside the cache into a download."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest

from serving.api.admin import confine
from serving.errors import BadRequestError
from serving.registry import ArtifactError, ArtifactStore, sha256_file
from serving.registry.testing import write_adapter


def test_a_symlink_inside_an_import_root_cannot_point_outside(tmp_path: Path) -> None:
    root = tmp_path / "incoming"
    root.mkdir()
    outside = write_adapter(tmp_path / "elsewhere" / "adapter")
    (root / "link").symlink_to(outside, target_is_directory=True)
    inside = write_adapter(root / "ok")
    assert confine(str(inside), [root]) == inside.resolve()
    for path in (root / "link", root / "link" / ".", root / ".." / "elsewhere" / "adapter", Path("/etc")):
        with pytest.raises(BadRequestError) as err:
            confine(str(path), [root])
        assert err.value.code == "path_not_allowed"
    # a root given through a symlink is compared resolved
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    assert confine(str(root / "ok"), [tmp_path / "root-link"]) == inside.resolve()


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"adapter_model.bin": 10}, "pickle-format"),
        ({"sub/optimizer.pt": 10}, "pickle-format"),
        ({"../../outside.json": 2}, "unsafe path"),
        ({"/etc/passwd": 2}, "unsafe path"),
    ],
)
def test_a_tampered_remote_manifest_is_refused_on_download(
    tmp_path: Path, files: dict[str, int], match: str
) -> None:
    root = f"memory://tl-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(root, cache_dir=tmp_path / "cache")
    src = write_adapter(tmp_path / "src")
    version = sha256_file(src / "adapter_model.safetensors")
    uri = store.put_version("support", version, src)
    fs = fsspec.filesystem("memory")
    marker = f"/{root.removeprefix('memory://')}/support/{version}/_COMMITTED"
    manifest = json.loads(fs.cat_file(marker))
    manifest["files"].update(files)
    fs.pipe_file(marker, json.dumps(manifest).encode())
    with pytest.raises(ArtifactError, match=match):
        store.local_path(uri)
    assert not (tmp_path / "cache" / "support" / version).exists()
    assert not (tmp_path / "outside.json").exists()
