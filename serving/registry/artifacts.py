"""Adapter artifact storage on fsspec: `<root>/<name>/<version>/` folders, written atomically.

The root is a local folder (default) or any fsspec URL (`s3://bucket/prefix`, `gs://...`, `memory://x`).

* Local disk: files are written into a hidden temp folder next to the target, then `os.rename`d into
  place, so a version folder either exists complete or not at all.
* Object stores (no atomic rename): files are written first and a `_COMMITTED` marker (a JSON manifest)
  last; a version without the marker is treated as absent and is overwritten by the next write.
* `local_path(uri)` gives a local folder vLLM can load: the folder itself on local disk, else a verified
  copy in `$TUNELOOP_HOME/adapter-cache/<name>/<version>` (downloaded to a temp folder, then renamed).
  A downloaded manifest naming a pickle-format file (or an unsafe path) is refused: only what
  registration validated (safetensors + JSON) ever reaches the engine.
* `storage_options` go to fsspec (`s3fs`: `endpoint_url`, `key`, `secret`, `client_kwargs`, ...), e.g.
  an S3-compatible endpoint such as MinIO; credentials are better left to the provider's own env vars.

Every path is built from a validated name (`^[a-z0-9][a-z0-9._-]{0,63}$`, no '..') and a sha256 hex
version, so nothing outside the root is ever touched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from common.home import tuneloop_home
from serving.registry.errors import ArtifactError, InvalidNameError, StorageFullError

__all__ = [
    "COMMITTED_MARKER",
    "PICKLE_SUFFIXES",
    "WEIGHTS_FILE",
    "ArtifactStore",
    "NAME_MAX_LEN",
    "check_name",
    "check_version",
    "sha256_file",
    "verify_folder",
]

NAME_MAX_LEN = 64
"""Longest adapter / experiment name (the registry's and the request log's name columns)."""
NAME_PATTERN = re.compile(rf"^[a-z0-9][a-z0-9._-]{{0,{NAME_MAX_LEN - 1}}}$")
VERSION_PATTERN = re.compile(r"^[0-9a-f]{64}$")
COMMITTED_MARKER = "_COMMITTED"
WEIGHTS_FILE = "adapter_model.safetensors"
_CHUNK = 1 << 20
# File formats that unpickle on load: refused at validation and on download.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})


def check_name(name: str, what: str = "adapter name") -> str:
    """Return `name` if it is a valid adapter/experiment name, else raise `InvalidNameError`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-{NAME_MAX_LEN} characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit (no '/', '..', '@' or upper case)"
        )
    return name


def check_version(version: str) -> str:
    """Return `version` if it is a full sha256 hex digest, else raise `InvalidNameError`."""
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise InvalidNameError(f"invalid version {version!r}: expected 64 lower-case hex characters (sha256)")
    return version


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_folder(folder: str | os.PathLike[str], version: str) -> None:
    """Check that a stored version's folder is still what was registered: `adapter_config.json` is a JSON
    object and `adapter_model.safetensors` hashes to `version` (catches changed bytes, truncation and
    missing files). Raises `ArtifactError` naming what is wrong."""
    path = Path(folder)
    if not os.fspath(folder) or not path.is_dir():
        raise ArtifactError(f"adapter folder {os.fspath(folder)!r} is missing", code="artifact_missing")
    config = path / "adapter_config.json"
    try:
        parsed = json.loads(config.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{config} is missing", code="artifact_missing") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{config} is unreadable: {exc}", code="artifact_corrupt") from None
    if not isinstance(parsed, dict):
        raise ArtifactError(f"{config} is not a JSON object", code="artifact_corrupt")
    weights = path / WEIGHTS_FILE
    try:
        digest = sha256_file(weights)
    except FileNotFoundError:
        raise ArtifactError(f"{weights} is missing", code="artifact_missing") from None
    if digest != version:
        raise ArtifactError(
            f"{weights} does not hash to its version {version[:12]}... (found {digest[:12]}...): "
            "the stored weights were changed or truncated after registration",
            code="artifact_corrupt",
        )


def _copy_file(src: str, dst: str) -> None:
    """Copy one file and fsync it (a module function so tests can inject a failure mid-copy)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)
        fout.flush()
        os.fsync(fout.fileno())


def _source_files(src_folder: Path) -> list[str]:
    """Relative paths of the regular files in `src_folder` (recursive); symlinks are refused."""
    if not src_folder.is_dir():
        raise ArtifactError(f"adapter folder {str(src_folder)!r} does not exist or is not a folder")
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src_folder):
        for entry in [*dirnames, *filenames]:
            full = Path(dirpath) / entry
            if full.is_symlink():
                raise ArtifactError(f"refusing symlink {str(full)!r} in adapter folder")
        for filename in filenames:
            if filename == COMMITTED_MARKER:
                continue
            files.append((Path(dirpath) / filename).relative_to(src_folder).as_posix())
    return sorted(files)


@dataclass(frozen=True, slots=True)
class _Location:
    name: str
    version: str


class ArtifactStore:
    """Adapter folders under one root (local path or fsspec URL)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        root_str = os.fspath(root)
        if "://" not in root_str or root_str.startswith("file://"):
            local = root_str.removeprefix("file://")
            root_str = os.path.abspath(os.path.expanduser(local))
        self._root = root_str.rstrip("/") or "/"
        fs, path = fsspec.core.url_to_fs(self._root, **dict(storage_options or {}))
        self._fs: fsspec.AbstractFileSystem = fs
        self._root_path: str = path.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else tuneloop_home() / "adapter-cache"
        if self._local:
            Path(self._root_path).mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> str:
        """The root as a URL (remote) or absolute path (local)."""
        return self._root

    @property
    def is_local(self) -> bool:
        return self._local

    # ------------------------------------------------------------------ addressing

    def uri_for(self, name: str, version: str) -> str:
        """The URI a version has (or would have) in this store."""
        return f"{self._root}/{check_name(name)}/{check_version(version)}"

    def _path(self, name: str, version: str) -> str:
        return f"{self._root_path}/{check_name(name)}/{check_version(version)}"

    def _parse(self, uri: str) -> _Location:
        prefix = self._root + "/"
        if not uri.startswith(prefix):
            raise ArtifactError(f"artifact URI {uri!r} is not under this store's root {self._root!r}")
        parts = uri[len(prefix) :].rstrip("/").split("/")
        if len(parts) != 2:
            raise ArtifactError(f"artifact URI {uri!r} is not of the form <root>/<name>/<version>")
        return _Location(check_name(parts[0]), check_version(parts[1]))

    # ------------------------------------------------------------------ queries

    def exists(self, name: str, version: str) -> bool:
        """True when the version is completely stored (local folder present / remote marker written)."""
        path = self._path(name, version)
        if self._local:
            return os.path.isdir(path)
        self._fs.invalidate_cache(path)  # another replica/process may have written it since we listed
        return bool(self._fs.exists(f"{path}/{COMMITTED_MARKER}"))

    # ------------------------------------------------------------------ writes

    def put_version(self, name: str, version: str, src_folder: str | os.PathLike[str]) -> str:
        """Store `src_folder` as `<name>/<version>` atomically and return its URI.

        Idempotent: an already stored version is left as is (versions are content-addressed).
        """
        src = Path(src_folder)
        files = _source_files(src)
        if WEIGHTS_FILE not in files:
            raise ArtifactError(f"adapter folder {str(src)!r} has no {WEIGHTS_FILE}")
        if self.exists(name, version):
            return self.uri_for(name, version)
        try:
            if self._local:
                self._put_local(name, version, src, files)
            else:
                self._put_remote(name, version, src, files)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StorageFullError(
                f"no space left in the adapter store {self._root!r} while writing {name}@{version[:12]}: "
                f"nothing was stored ({exc.strerror})"
            ) from exc
        return self.uri_for(name, version)

    def _put_local(self, name: str, version: str, src: Path, files: list[str]) -> None:
        final = Path(self._path(name, version))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{version[:12]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for rel in files:
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(str(src / rel), str(target))
            if sha256_file(tmp / WEIGHTS_FILE) != version:
                raise ArtifactError(
                    f"{WEIGHTS_FILE} in {str(src)!r} does not hash to version {version[:12]}... "
                    "(was it modified while being registered?)"
                )
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # A concurrent writer stored the same content first.
            _fsync_dir(final.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _put_remote(self, name: str, version: str, src: Path, files: list[str]) -> None:
        dest = self._path(name, version)
        if self._fs.exists(dest):
            self._fs.rm(dest, recursive=True)  # leftovers of an interrupted, uncommitted write
        try:
            sizes: dict[str, int] = {}
            for rel in files:
                self._fs.makedirs(os.path.dirname(f"{dest}/{rel}"), exist_ok=True)
                self._fs.put_file(str(src / rel), f"{dest}/{rel}")
                sizes[rel] = (src / rel).stat().st_size
            manifest = {"name": name, "version": version, "files": sizes}
            self._fs.pipe_file(f"{dest}/{COMMITTED_MARKER}", json.dumps(manifest).encode())
        except BaseException:
            try:
                if self._fs.exists(dest):
                    self._fs.rm(dest, recursive=True)
            except Exception:  # noqa: BLE001 - best effort; without the marker the version is absent anyway
                pass
            raise

    def delete_version(self, name: str, version: str) -> bool:
        """Delete a stored version (and its local cache copy). Returns False when it was not stored."""
        path = self._path(name, version)
        self._drop_cache(name, version)
        if self._local:
            final = Path(path)
            if not final.is_dir():
                return False
            trash = final.parent / f".trash-{version[:12]}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)  # disappears atomically, then is removed
            shutil.rmtree(trash, ignore_errors=True)
            return True
        existed = self.exists(name, version)
        marker = f"{path}/{COMMITTED_MARKER}"
        if self._fs.exists(marker):
            self._fs.rm_file(marker)  # absent from now on, even if the rest fails to delete
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)
        return existed

    def delete_uri(self, uri: str) -> bool:
        """`delete_version` for a URI this store returned."""
        loc = self._parse(uri)
        return self.delete_version(loc.name, loc.version)

    # ------------------------------------------------------------------ reads

    def local_path(self, uri: str) -> Path:
        """A local folder holding the version's files (downloaded into the cache for remote roots)."""
        loc = self._parse(uri)
        if self._local:
            path = Path(self._path(loc.name, loc.version))
            if not path.is_dir():
                raise ArtifactError(f"adapter artifact {uri!r} is missing from the store")
            return path
        final = self._cache_dir / loc.name / loc.version
        if final.is_dir():
            return final
        remote = self._path(loc.name, loc.version)
        try:
            manifest = json.loads(self._fs.cat_file(f"{remote}/{COMMITTED_MARKER}"))
        except FileNotFoundError as exc:
            raise ArtifactError(f"adapter artifact {uri!r} is missing (or was never committed)") from exc
        files: dict[str, int] = manifest["files"]
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{loc.version[:12]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for rel, size in files.items():
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise ArtifactError(f"artifact manifest of {uri!r} names an unsafe path {rel!r}")
                if Path(rel).suffix.lower() in PICKLE_SUFFIXES:
                    raise ArtifactError(f"artifact {uri!r} holds a pickle-format file {rel!r}; refusing it")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self._fs.get_file(f"{remote}/{rel}", str(target))
                if target.stat().st_size != size:
                    raise ArtifactError(f"downloaded {rel!r} of {uri!r} has the wrong size")
            if sha256_file(tmp / WEIGHTS_FILE) != loc.version:
                raise ArtifactError(f"downloaded weights of {uri!r} do not match their sha256 version")
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _drop_cache(self, name: str, version: str) -> None:
        cached = self._cache_dir / name / version
        if not self._local and cached.is_dir():
            shutil.rmtree(cached, ignore_errors=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({self._root!r})"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
