"""Moving objects between a delta directory or the local cache and a store.

Uploads skip objects the store already has (objects are immutable and named by content) and
refuse to send a local file whose bytes do not match its name. Downloads land in the cache's
staging area, are verified against their sha256 and only then enter the cache; a cached object
is checked too, and fetched again if it is torn or wrong; a retry after a transient failure
fetches only what is still missing. The objects stay held in the cache's lease for the caller
(which releases them once it has used them). A corrupt object is reported by name and
removed; nothing unverified ever reaches the checkpoint layer. A download can be told to stop
(``should_stop``, checked before each object starts): what arrived stays in the cache for the
next run, and :class:`TransferCancelledError` says the rest was not fetched."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from deltaroll.store import keys
from deltaroll.store.backends import Backend, ProgressCallback
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.cache import ObjectCache, StagedHash, file_sha256
from deltaroll.store.errors import CorruptObjectError, StoreError, TransferCancelledError
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.node_cache import NodeCacheClient
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
    located: Mapping[str, Path] | None = None,
    checked: bool = False,
) -> int:
    """Upload the objects of ``refs`` that the store lacks, each from ``objects_dir`` or from
    where ``located`` says (a delta's manifest file); bytes sent. ``checked``: the local files
    were checked against their names by an earlier call (a publish's second look)."""
    unique = {ref.digest: ref for ref in refs}
    paths = {digest: objects_dir / digest for digest in unique} | dict(located or {})
    for ref in () if checked else unique.values():
        local = paths[ref.digest]
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
        todo = [(paths[ref.digest], key) for key, ref in by_key.items() if key not in present]
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
    should_stop: Callable[[], bool] | None = None,
    node_cache: NodeCacheClient | None = None,
    served_by_node: set[str] | None = None,
) -> int:
    """Bring every object of ``refs`` into ``cache``, verified, and hold them there (no prune
    removes them until the caller calls ``cache.release``); bytes downloaded from the store.

    With ``node_cache``, each object is asked of the node's cache first (one object per call,
    as with ``should_stop``); what it serves is not counted here (it counts it itself), and
    its digests are added to ``served_by_node``.

    With ``should_stop``, it is asked before each object starts; once it says True no further
    object starts (those in flight finish and are kept) and :class:`TransferCancelledError` is
    raised. Without it, the backend gets the whole list at once to batch as it likes.
    """
    unique = {ref.digest: ref for ref in refs}
    served_by_node = set() if served_by_node is None else served_by_node
    received = 0
    not_started = 0
    cache.hold(unique)  # before looking: a prune by another process keeps them from now on

    def attempt() -> None:
        nonlocal received, not_started
        received += cache.adopt_staged(unique.values())  # left by an interrupted run
        missing = [ref for ref in unique.values() if not cache.verified(ref.digest)]
        items = [
            (keys.object_key(model, ref.digest), cache.staging_path(ref.digest)) for ref in missing
        ]
        completed = False
        from_node: dict[str, StagedHash] = {}
        try:
            if should_stop is None and node_cache is None:
                backend.download_files(items, progress=progress)
            else:
                not_started = _download_one_by_one(
                    backend, items, progress, should_stop, node_cache, missing, from_node
                )
            completed = True
        finally:
            # Keep whatever arrived complete and correct, whatever happened to the rest.
            for ref, (key, staged) in zip(missing, items, strict=True):
                if not staged.is_file():
                    continue
                actual = cache.commit(ref.digest, staged, hashed=from_node.get(ref.digest))
                if actual == ref.digest:
                    if ref.digest in from_node:
                        served_by_node.add(ref.digest)
                    else:
                        received += ref.size
                elif completed:
                    raise CorruptObjectError(backend.uri, key, actual)

    call_with_retry(attempt, what=f"download {len(unique)} objects", policy=policy)
    if not_started:
        log.info("store.download_stopped", uri=backend.uri, not_started=not_started, bytes=received)
        raise TransferCancelledError(backend.uri, not_started, len(unique), received)
    log.info("store.downloaded", uri=backend.uri, objects=len(unique), bytes=received)
    return received


def _download_one_by_one(
    backend: Backend,
    items: Sequence[tuple[str, Path]],
    progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
    node_cache: NodeCacheClient | None,
    refs: Sequence[ObjectRef],
    from_node: dict[str, StagedHash],
) -> int:
    """Download ``items`` one object per call (as many at once as the backends' pool allows),
    through ``node_cache`` if given (adding what it served, and its hash, to ``from_node``), asking
    ``should_stop`` before each; returns how many were never started."""
    lock = threading.Lock()
    stopped = False
    skipped = 0

    def download(item: tuple[tuple[str, Path], ObjectRef]) -> None:
        nonlocal stopped, skipped
        (key, staged), ref = item
        with lock:  # once stopped, stay stopped: no object starts after the answer True
            stopped = stopped or (should_stop is not None and should_stop())
            if stopped:
                skipped += 1
                return
        if node_cache is None:
            backend.download_files([(key, staged)], progress=progress)
        elif (hashed := node_cache.bring(backend, key, ref, staged, progress)) is not None:
            with lock:
                from_node[ref.digest] = hashed

    run_all(download, list(zip(items, refs, strict=True)))
    return skipped
