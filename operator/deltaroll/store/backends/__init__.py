"""Backends: a flat key/bytes namespace per store URI scheme (file, s3, hf)."""

from __future__ import annotations

from collections.abc import Mapping

from deltaroll.store.backends.base import Backend, ObjectInfo, ProgressCallback
from deltaroll.store.uri import StoreUri

__all__ = ["Backend", "ObjectInfo", "ProgressCallback", "open_backend"]


def open_backend(uri: StoreUri, credentials: Mapping[str, str] | None = None) -> Backend:
    """The backend for ``uri``; its library is imported only when that scheme is used.

    ``credentials`` (environment variable names to values) replace the process environment's
    for this backend only; None means the environment, as for the CLI, worker and agent."""
    if uri.scheme == "file":
        from deltaroll.store.backends.file import FileBackend

        return FileBackend(uri)
    if uri.scheme == "s3":
        from deltaroll.store.backends.s3 import S3Backend

        return S3Backend(uri, credentials)
    from deltaroll.store.backends.hf import HfBackend

    return HfBackend(uri, credentials=credentials)
