"""An in-memory stand-in for ``huggingface_hub.HfApi``, faked only at its bucket methods.

It keeps the real method signatures and returns the library's own ``BucketFile`` and
``BucketFolder`` objects, paginates listings like the server does, and records every call so
tests can assert on batching. Errors can be injected per method, and per path in a batch
(``refuse``): like the Hub, a batch then applies its other operations and answers 200 with the
failed paths, or 422 when every operation failed, which huggingface_hub raises as
``BucketBatchError``. Listing matches the prefix lexically, as the Hub does, so a prefix nothing
is under lists nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import BucketFile, BucketFolder
from huggingface_hub.errors import BucketBatchError, EntryNotFoundError, HfHubHTTPError


def http_error(status: int, message: str = "boom") -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/buckets/ns/b/batch")
    return HfHubHTTPError(message, response=httpx2.Response(status, request=request))


class FakeHubApi:
    PAGE = 50  # the listing is served in pages, as the Hub's paginated tree endpoint does

    def __init__(self, bucket_id: str = "ns/bucket") -> None:
        self.bucket_id = bucket_id
        self.files: dict[str, bytes] = {}
        self.written: dict[str, datetime] = {}  # the mtime the Hub reports (else: now)
        self.calls: list[tuple[str, int]] = []  # (method, number of items)
        self.pages_served = 0
        self.fail: dict[str, list[BaseException]] = {}
        self.refuse: dict[str, int] = {}  # bucket path -> how many more batches fail it

    def _enter(self, method: str, bucket_id: str, items: int) -> None:
        assert bucket_id == self.bucket_id, bucket_id
        self.calls.append((method, items))
        queue = self.fail.get(method)
        if queue:
            raise queue.pop(0)

    def _info(self, path: str) -> BucketFile:
        data = self.files[path]
        return BucketFile(
            type="file",
            path=path,
            size=len(data),
            xetHash=hashlib.sha256(data).hexdigest(),
            mtime=self.written.get(path, datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )

    def batch_bucket_files(
        self,
        bucket_id: str,
        *,
        add: list[tuple[str | Path | bytes, str]] | None = None,
        copy: list[tuple[str, str, str, str]] | None = None,
        delete: list[str] | None = None,
        token: str | bool | None = None,
    ) -> None:
        sent = len(add or []) + len(delete or [])
        self._enter("batch_bucket_files", bucket_id, sent)
        failed = []
        for source, destination in add or []:
            if self._refused(destination):
                failed.append({"path": destination, "error": "rejected by the Hub"})
                continue
            self.files[destination] = (
                source if isinstance(source, bytes) else Path(source).read_bytes()
            )
            self.written[destination] = datetime.now(UTC)
        for path in delete or []:
            self.files.pop(path, None)
            self.written.pop(path, None)
        if failed:
            status = 422 if len(failed) == sent else 200
            error = BucketBatchError(
                f"Failed to apply {len(failed)} out of {sent} operation(s)",
                response=http_error(status).response,
            )
            error.failures = failed
            raise error

    def _refused(self, path: str) -> bool:
        left = self.refuse.get(path, 0)
        if left:
            self.refuse[path] = left - 1
        return left > 0

    def get_bucket_paths_info(
        self, bucket_id: str, paths: Iterable[str], *, token: str | bool | None = None
    ) -> Iterator[BucketFile]:
        paths = list(paths)
        self._enter("get_bucket_paths_info", bucket_id, len(paths))
        return iter([self._info(p) for p in paths if p in self.files])

    def download_bucket_files(
        self,
        bucket_id: str,
        files: list[tuple[str | BucketFile, str | Path]],
        *,
        raise_on_missing_files: bool = False,
        token: str | bool | None = None,
    ) -> None:
        self._enter("download_bucket_files", bucket_id, len(files))
        for remote, local in files:
            path = remote.path if isinstance(remote, BucketFile) else remote
            if path not in self.files:
                raise EntryNotFoundError(f"1 file(s) not found in bucket '{bucket_id}': {path}")
            Path(local).write_bytes(self.files[path])

    def list_bucket_tree(
        self,
        bucket_id: str,
        prefix: str | None = None,
        *,
        recursive: bool | None = None,
        token: str | bool | None = None,
    ) -> Iterator[Any]:
        self._enter("list_bucket_tree", bucket_id, 0)
        assert recursive is True
        matching = sorted(p for p in self.files if prefix is None or p.startswith(prefix))
        folders = sorted({p.rsplit("/", 1)[0] for p in matching if "/" in p})
        entries: list[Any] = [BucketFolder(type="directory", path=f) for f in folders]
        entries += [self._info(p) for p in matching]
        for start in range(0, len(entries), self.PAGE):
            self.pages_served += 1
            yield from entries[start : start + self.PAGE]
