"""The ``file://`` backend: a directory, e.g. a ReadWriteMany volume shared by a cluster.

Every write goes to a temporary file in the target's directory and is then renamed into place,
so readers never see partial content. A conditional create links the finished temporary file to
the final name: ``link`` fails if the name exists, which gives O_EXCL semantics with the whole
content already in place (on local filesystems and NFSv3+).

A write returns once its bytes and its name are durable (the file fsynced before the rename, its
directory after, every folder it had to make fsynced into its parent): a publish writes objects
before the manifests that name them, and a power loss must never keep a manifest whose objects
it lost."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from deltaroll.checkpoint.staging import fsync_directory, fsync_path, make_directories
from deltaroll.redact import reason
from deltaroll.store.backends.base import ObjectInfo, ProgressCallback
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.errors import ObjectNotFoundError, StoreAccessError
from deltaroll.store.uri import StoreUri

_TMP_PREFIX = ".tmp-"
T = TypeVar("T")


class FileBackend:
    """Keys are relative paths under the root directory of a ``file://`` URI."""

    def __init__(self, uri: StoreUri) -> None:
        self.uri = str(uri)
        self.root = Path(uri.location)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StoreAccessError(f"{self.uri}: refusing unsafe key {key!r}")
        return self.root / key

    def _guard(self, key: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(self.uri, key) from exc
        except OSError as exc:
            raise StoreAccessError(f"{self.uri}: cannot access {key!r}: {reason(exc)}") from exc

    def read(self, key: str) -> bytes:
        return self._guard(key, self._path(key).read_bytes)

    def write(self, key: str, data: bytes, *, create_only: bool) -> bool:
        def action() -> bool:
            path = self._path(key)
            tmp = _write_temp(path, data)
            try:
                if not create_only:
                    os.replace(tmp, path)
                else:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        return False
                fsync_directory(path.parent)
                return True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

        return self._guard(key, action)

    def upload_files(
        self, items: Sequence[tuple[Path, str]], *, progress: ProgressCallback | None = None
    ) -> None:
        def upload(item: tuple[Path, str]) -> None:
            source, key = item

            def action() -> None:
                path = self._path(key)
                make_directories(path.parent)
                tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
                try:
                    shutil.copyfile(source, tmp)
                    fsync_path(tmp)
                    os.replace(tmp, path)
                    fsync_directory(path.parent)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()

            self._guard(key, action)
            if progress:
                progress(source.stat().st_size)

        run_all(upload, items)

    def download_files(
        self, items: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> None:
        def download(item: tuple[str, Path]) -> None:
            key, dest = item
            self._guard(key, lambda: shutil.copyfile(self._path(key), dest))
            if progress:
                progress(dest.stat().st_size)

        run_all(download, items)

    def existing(self, keys: Iterable[str]) -> set[str]:
        return {key for key in keys if self._path(key).is_file()}

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                if name.startswith(_TMP_PREFIX):
                    continue
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    yield ObjectInfo(
                        key=path.relative_to(self.root).as_posix(),
                        size=stat.st_size,
                        modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                        # writes go to a new file renamed over the key: a new inode each time
                        revision=f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}",
                    )

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self._path(key)
            self._guard(key, partial(path.unlink, missing_ok=True))


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` durably to a fresh temporary file next to ``path``."""
    make_directories(path.parent)
    tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    with open(tmp, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp
