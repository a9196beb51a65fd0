"""Moving objects between a delta directory or the local cache and a store.

Uploads skip objects the store already has (objects are immutable and named by content) and
refuse to send a local file whose bytes do not match its name. Downloads land in the cache's
staging area, are verified against their sha256 and only then enter the cache; a retry after a
transient failure fetches only what is still missing. A corrupt object is reported by name and
removed; nothing unverified ever reaches the checkpoint layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from deltaroll.store import keys
from deltaroll.store.backends import Backend, ProgressCallback
from deltaroll.store.cache import ObjectCache, file_sha256
from deltaroll.store.errors import CorruptObjectError, StoreError
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

log = structlog.get_logger(__name__)


def upload_objects(
    backend: Backend,
    model: str,
    objects_dir: Path,
    refs: Sequence[ObjectRef],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: ProgressCallback | None = None,
) -> int:
    """Upload the objects of ``refs`` from ``objects_dir`` that the store lacks; bytes sent."""
    unique = {ref.digest: ref for ref in refs}
    for ref in unique.values():
        local = objects_dir / ref.digest
        if (
            not local.is_file()
            or local.stat().st_size != ref.size
            or file_sha256(local) != ref.digest
        ):
            raise StoreError(
                f"local object {local} is missing or does not match its name; recompute the "
                "delta before pushing it"
            )
    by_key = {keys.object_key(model, digest): ref for digest, ref in unique.items()}
    sent = 0

    def attempt() -> None:
        nonlocal sent
        present = backend.existing(by_key)
        todo = [
            (objects_dir / ref.digest, key) for key, ref in by_key.items() if key not in present
        ]
        backend.upload_files(todo, progress=progress)
        sent += sum(by_key[key].size for _, key in todo)

    call_with_retry(attempt, what=f"upload {len(by_key)} objects", policy=policy)
    log.info("store.uploaded", uri=backend.uri, objects=len(by_key), bytes=sent)
    return sent


def download_objects(
    backend: Backend,
    model: str,
    refs: Sequence[ObjectRef],
    cache: ObjectCache,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: ProgressCallback | None = None,
) -> int:
    """Bring every object of ``refs`` into ``cache``, verified; bytes downloaded."""
    unique = {ref.digest: ref for ref in refs}
    received = 0

    def attempt() -> None:
        nonlocal received
        received += cache.adopt_staged(unique.values())  # left by an interrupted run
        missing = [ref for ref in unique.values() if not cache.has(ref.digest)]
        items = [
            (keys.object_key(model, ref.digest), cache.staging_path(ref.digest)) for ref in missing
        ]
        completed = False
        try:
            backend.download_files(items, progress=progress)
            completed = True
        finally:
            # Keep whatever arrived complete and correct, whatever happened to the rest.
            for ref, (key, staged) in zip(missing, items, strict=True):
                if not staged.is_file():
                    continue
                actual = cache.commit(ref.digest, staged)
                if actual == ref.digest:
                    received += ref.size
                elif completed:
                    raise CorruptObjectError(backend.uri, key, actual)

    call_with_retry(attempt, what=f"download {len(unique)} objects", policy=policy)
    log.info("store.downloaded", uri=backend.uri, objects=len(unique), bytes=received)
    return received
