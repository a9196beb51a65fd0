"""The ``hf://buckets/<namespace>/<bucket>/prefix`` backend, on huggingface_hub's bucket API.

Uploads and deletes go through ``batch_bucket_files`` in bounded batches; downloads resolve
their paths with one ``get_bucket_paths_info`` call per batch (which also tells us by name which
key is missing) and then hand the resolved files to ``download_bucket_files``, which fetches them
concurrently over Xet. The token comes from huggingface_hub's usual places (HF_TOKEN, the saved
login), unless explicit ``credentials`` (HF_TOKEN, HF_ENDPOINT: the operator's copy of a Secret)
are given; then only those are used, never the process's own login.

A batch the Hub applied only in part answers 200 with the failed paths; the store's retry sends
again only what is still missing (uploads skip present objects), so a path that keeps failing
ends up alone in a batch the Hub refuses whole (422): that is permanent, never retried.

The bucket API has no conditional write, so ``create_only`` is check-then-write: two writers of
the same version racing within the same second can both write, and the last one wins. Version
ids are content-derived, so both wrote a manifest of the same weights; only metadata such as the
creation time can differ. The S3 and file backends make this race impossible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    BucketBatchError,
    BucketNotFoundError,
    EntryNotFoundError,
    HfHubHTTPError,
)

from deltaroll.redact import reason, scrub
from deltaroll.store.backends.base import ObjectInfo, ProgressCallback
from deltaroll.store.errors import (
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreRefusedError,
    TransientStoreError,
)
from deltaroll.store.uri import StoreUri

if TYPE_CHECKING:
    from huggingface_hub import BucketFile

T = TypeVar("T")
BATCH_SIZE = 256
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_NOTHING_APPLIED = 422  # the batch status when every operation of it failed


class HfBackend:
    """Keys live under ``<prefix>/`` in a Hub bucket. ``api`` is injectable for unit tests."""

    def __init__(
        self,
        uri: StoreUri,
        api: HfApi | None = None,
        *,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self.uri = str(uri)
        self.bucket_id = uri.location
        self.prefix = f"{uri.prefix}/" if uri.prefix else ""
        self.api = api if api is not None else _api(credentials)

    def path_of(self, key: str) -> str:
        """The path in the bucket of a store key."""
        return self.prefix + key

    def key_of(self, path: str) -> str | None:
        """The store key of a bucket path, or None for a path outside the store's prefix."""
        return path[len(self.prefix) :] if path.startswith(self.prefix) else None

    def _guard(self, key: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except BucketNotFoundError as exc:
            raise StoreAccessError(
                f"{self.uri}: bucket {self.bucket_id!r} not found or not visible with this token; "
                "create it (`hf buckets create`) or check HF_TOKEN"
            ) from exc
        except EntryNotFoundError as exc:
            raise ObjectNotFoundError(self.uri, key) from exc
        except BucketBatchError as exc:
            raise _batch_error(self.uri, exc) from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in _TRANSIENT_STATUS:
                raise TransientStoreError(f"{self.uri}: {key!r}: {reason(exc)}") from exc
            if status in (401, 403):
                raise StoreAccessError(
                    f"{self.uri}: access to {key!r} was refused (HTTP {status}); check that "
                    "HF_TOKEN has write access to the bucket"
                ) from exc
            raise StoreError(f"{self.uri}: {key!r}: {reason(exc)}") from exc
        except (httpx2.TransportError, OSError) as exc:
            raise TransientStoreError(f"{self.uri}: {key!r}: {reason(exc)}") from exc

    def _resolve(self, keys: Sequence[str]) -> dict[str, BucketFile]:
        """Bucket file infos of ``keys`` that exist, by key."""
        paths = [self.path_of(key) for key in keys]
        infos = self._guard(
            keys[0] if keys else "",
            lambda: list(self.api.get_bucket_paths_info(self.bucket_id, paths)),
        )
        resolved: dict[str, BucketFile] = {}
        for info in infos:
            key = self.key_of(info.path)
            if key is not None:
                resolved[key] = info
        return resolved

    def read(self, key: str) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="deltaroll-hf-") as tmp:
            target = Path(tmp) / "object"
            self.download_files([(key, target)])
            return target.read_bytes()

    def write(self, key: str, data: bytes, *, create_only: bool) -> bool:
        if create_only and key in self.existing([key]):
            return False
        self._guard(
            key,
            lambda: self.api.batch_bucket_files(self.bucket_id, add=[(data, self.path_of(key))]),
        )
        return True

    def upload_files(
        self, items: Sequence[tuple[Path, str]], *, progress: ProgressCallback | None = None
    ) -> None:
        for batch in _batches(items):
            adds: list[tuple[str | Path | bytes, str]] = [
                (str(source), self.path_of(key)) for source, key in batch
            ]
            self._guard(batch[0][1], partial(self.api.batch_bucket_files, self.bucket_id, add=adds))
            if progress:
                progress(sum(source.stat().st_size for source, _ in batch))

    def download_files(
        self, items: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> None:
        for batch in _batches(items):
            resolved = self._resolve([key for key, _ in batch])
            for key, _ in batch:
                if key not in resolved:
                    raise ObjectNotFoundError(self.uri, key)
            files: list[tuple[Any, str | Path]] = [(resolved[key], dest) for key, dest in batch]
            download = partial(
                self.api.download_bucket_files, self.bucket_id, files, raise_on_missing_files=True
            )
            self._guard(batch[0][0], download)
            if progress:
                progress(sum(resolved[key].size for key, _ in batch))

    def existing(self, keys: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for batch in _batches(list(keys)):
            found.update(self._resolve(batch))
        return found

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        from huggingface_hub import BucketFile

        full = self.path_of(prefix)

        def entries() -> list[ObjectInfo]:
            listed = []
            tree = self.api.list_bucket_tree(
                self.bucket_id, full.rstrip("/") or None, recursive=True
            )
            for entry in tree:
                if not isinstance(entry, BucketFile):
                    continue  # folders: their files are listed too (recursive)
                key = self.key_of(entry.path)
                if key is not None and key.startswith(prefix):
                    modified = entry.uploaded_at or entry.mtime
                    listed.append(ObjectInfo(key, entry.size, modified, entry.xet_hash))
            return listed

        # The Hub matches the prefix lexically and answers a prefix nothing is under with an
        # empty listing (huggingface_hub's HfFileSystem turns that into "not found" itself), so a
        # 404 here is not an empty folder: it is reported.
        yield from self._guard(prefix, entries)

    def delete(self, keys: Sequence[str]) -> None:
        for batch in _batches(keys):
            paths = [self.path_of(key) for key in batch]
            self._guard(
                batch[0], partial(self.api.batch_bucket_files, self.bucket_id, delete=paths)
            )


def _batch_error(uri: str, exc: BucketBatchError) -> StoreError:
    """A partly applied batch may pass when sent again; one the Hub refused whole will not."""
    listed = "; ".join(f"{f.get('path')}: {f.get('error')}" for f in exc.failures[:3])
    failed = f"{len(exc.failures)} file(s) ({scrub(listed)[:240]})"
    if exc.response is not None and exc.response.status_code == _NOTHING_APPLIED:
        return StoreRefusedError(
            f"{uri}: the Hub refused {failed}; sending them again gets the same answer: "
            "check the paths and the bucket's limits"
        )
    return TransientStoreError(f"{uri}: the Hub applied the batch except {failed}")


def _batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), BATCH_SIZE):
        yield items[start : start + BATCH_SIZE]


def _api(credentials: Mapping[str, str] | None) -> HfApi:
    """The Hub client; explicit credentials replace the environment's (False: send no token)."""
    if credentials is None:
        return HfApi()
    return HfApi(
        token=credentials.get("HF_TOKEN") or False,
        endpoint=credentials.get("HF_ENDPOINT") or None,
    )
