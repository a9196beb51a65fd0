"""The local object cache: only verified objects enter; what a killed pull left is adopted."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deltaroll.store.cache import ObjectCache
from deltaroll.store.manifests import ObjectRef


def ref_of(data: bytes) -> ObjectRef:
    return ObjectRef(digest=hashlib.sha256(data).hexdigest(), size=len(data))


def test_only_matching_bytes_enter_the_cache(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "cache")
    good, bad = ref_of(b"payload"), ref_of(b"other")
    staged = cache.staging_path(good.digest)
    staged.write_bytes(b"payload")
    assert cache.commit(good.digest, staged) == good.digest and cache.has(good.digest)
    staged = cache.staging_path(bad.digest)
    staged.write_bytes(b"tampered")
    assert cache.commit(bad.digest, staged) == hashlib.sha256(b"tampered").hexdigest()
    assert not cache.has(bad.digest) and not staged.exists()


def test_complete_downloads_of_a_killed_pull_are_adopted(tmp_path: Path) -> None:
    """A pull killed after downloading leaves files in staging; the next run adopts the complete
    ones and leaves unfinished ones alone (another pull may still be writing them)."""
    cache = ObjectCache(tmp_path / "cache")
    done, unfinished = ref_of(b"complete object"), ref_of(b"half written object")
    cache.staging_path(done.digest).write_bytes(b"complete object")
    partial = cache.staging_path(unfinished.digest)
    partial.write_bytes(b"half wri")
    assert cache.adopt_staged([done, unfinished]) == done.size
    assert cache.has(done.digest) and not cache.has(unfinished.digest)
    assert partial.exists()


def test_cached_objects_are_linked_into_delta_directories(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "cache")
    ref = ref_of(b"bytes")
    cache.commit(ref.digest, _staged(cache, ref, b"bytes"))
    dest = tmp_path / "delta" / ref.digest
    dest.parent.mkdir()
    cache.link_into(ref.digest, dest)
    assert dest.read_bytes() == b"bytes"


def _staged(cache: ObjectCache, ref: ObjectRef, data: bytes) -> Path:
    path = cache.staging_path(ref.digest)
    path.write_bytes(data)
    return path
