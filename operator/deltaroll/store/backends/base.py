"""The interface every backend implements: a flat namespace of keys holding bytes.

Backends know nothing of versions or manifests. They move bytes, report what exists, and turn
their library's exceptions into the store's named errors: :class:`ObjectNotFoundError` for a
missing key, :class:`TransientStoreError` for what a retry may fix, :class:`StoreAccessError` for
what it will not. Bulk methods take whole lists so each backend can batch or parallelise in the
way its protocol likes (a thread pool for S3 and files, one batch call for the Hub)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

ProgressCallback = Callable[[int], None]
"""Called with a number of bytes each time a transfer finishes part of its work."""


@dataclass(frozen=True)
class ObjectInfo:
    """A listed key, its size, when it was last written (for gc's grace period) and its
    ``revision``: a value that changes whenever the key's bytes are written (S3's ETag, the
    Hub's content hash, a file's inode and mtime in nanoseconds); None where the backend has
    none, and then nothing read from the key is reused."""

    key: str
    size: int
    modified: datetime | None
    revision: str | None = None


class Backend(Protocol):
    """A flat key/bytes namespace under a store URI. Keys use ``/`` and never start with it."""

    uri: str

    def read(self, key: str) -> bytes:
        """The bytes of ``key``; :class:`ObjectNotFoundError` if it does not exist."""
        ...

    def write(self, key: str, data: bytes, *, create_only: bool) -> bool:
        """Store ``data`` atomically. With ``create_only`` an existing key is left as it is and
        False is returned; a reader never sees partial content either way."""
        ...

    def upload_files(
        self, items: Sequence[tuple[Path, str]], *, progress: ProgressCallback | None = None
    ) -> None:
        """Upload local files to keys, concurrently, overwriting (contents are immutable)."""
        ...

    def download_files(
        self, items: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> None:
        """Download keys to local paths, concurrently. The paths' parents exist. Raises
        :class:`ObjectNotFoundError` naming a missing key."""
        ...

    def existing(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` exist."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every key under ``prefix`` (recursively)."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; keys that are already gone are not an error."""
        ...
