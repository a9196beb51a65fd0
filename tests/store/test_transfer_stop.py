"""``download_objects`` told to stop: no object starts after ``should_stop`` says True, the ones
that arrived are kept verified in the cache, and the next run fetches only the rest."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from deltaroll.store import TransferCancelledError, parse_store_uri
from deltaroll.store.backends import Backend, ProgressCallback, open_backend
from deltaroll.store.cache import ObjectCache
from deltaroll.store.keys import object_key
from deltaroll.store.manifests import ObjectRef
from store.support import FAST_RETRY

MODEL = "tiny"


class CountingBackend:
    """A real backend that records every key it is asked to download."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.requested: list[str] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def download_files(
        self, items: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> None:
        with self._lock:
            self.requested.extend(key for key, _ in items)
        self.inner.download_files(items, progress=progress)


class StopAfter:
    """``should_stop`` that answers False ``allowed`` times, then True; counts its calls."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            self.calls += 1
            return self.calls > self.allowed


def stored_objects(backend: Backend, count: int) -> list[ObjectRef]:
    refs = []
    for index in range(count):
        data = os.urandom(4096 + index)
        ref = ObjectRef(digest=hashlib.sha256(data).hexdigest(), size=len(data))
        backend.write(object_key(MODEL, ref.digest), data, create_only=True)
        refs.append(ref)
    return refs


@pytest.mark.parametrize("allowed", [0, 2])
def test_no_object_starts_after_stop_and_the_rest_is_fetched_next_time(
    store_uri: str, tmp_path: Path, allowed: int
) -> None:
    from deltaroll.store.transfer import download_objects

    backend = CountingBackend(open_backend(parse_store_uri(store_uri)))
    refs = stored_objects(backend.inner, 6)
    cache = ObjectCache(tmp_path / "cache")
    stop = StopAfter(allowed)

    with pytest.raises(TransferCancelledError) as raised:
        download_objects(backend, MODEL, refs, cache, policy=FAST_RETRY, should_stop=stop)

    assert stop.calls == allowed + 1  # once it said True it was not asked again
    assert len(backend.requested) == allowed  # and no further object started
    fetched = [ref for ref in refs if cache.has(ref.digest)]
    assert {object_key(MODEL, ref.digest) for ref in fetched} == set(backend.requested)
    assert raised.value.not_started == len(refs) - allowed
    assert raised.value.received == sum(ref.size for ref in fetched)
    assert "run the pull again" in str(raised.value)

    backend.requested.clear()
    received = download_objects(
        backend, MODEL, refs, cache, policy=FAST_RETRY, should_stop=StopAfter(len(refs))
    )
    rest = [ref for ref in refs if ref not in fetched]
    assert sorted(backend.requested) == sorted(object_key(MODEL, ref.digest) for ref in rest)
    assert received == sum(ref.size for ref in rest)
    assert all(cache.has(ref.digest) for ref in refs)
    assert not any((cache.partial).iterdir())
