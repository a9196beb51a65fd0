"""The local object cache: only verified objects enter, durably; a cached file is hashed before it
is trusted; what a killed pull left is adopted."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from deltaroll.api.object_cache import SALT_NAME
from deltaroll.store import ObjectCacheError, Store
from deltaroll.store import cache as cache_module
from deltaroll.store.cache import ObjectCache, staged_hash
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


def test_a_cached_object_is_hashed_once_per_process_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ObjectCache(tmp_path / "cache")
    ref = ref_of(b"verified bytes")
    cache.path(ref.digest).parent.mkdir(parents=True)
    cache.path(ref.digest).write_bytes(b"verified bytes")  # put there by someone else
    hashed: list[int] = []
    real = cache_module._sha256
    monkeypatch.setattr(cache_module, "_sha256", lambda fd: hashed.append(fd) or real(fd))

    assert cache.verified(ref.digest) and cache.verified(ref.digest)
    assert len(hashed) == 1
    cache.path(ref.digest).write_bytes(b"verified BYTES")  # same size, rewritten in place
    assert not cache.verified(ref.digest) and not cache.path(ref.digest).exists()
    assert len(hashed) == 2


def test_a_commit_is_durable_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync the object before it gets its name, and the directory after: a power loss
    leaves no torn file under a digest's name."""
    cache = ObjectCache(tmp_path / "cache")
    ref = ref_of(b"durable")
    staged = _staged(cache, ref, b"durable")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: Path, dest: Path) -> None:
        events.append(("rename", str(dest)))
        real_replace(source, dest)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    cache.commit(ref.digest, staged)
    final = str(cache.path(ref.digest))
    assert events.index(("fsync", str(staged))) < events.index(("rename", final))
    assert events.index(("rename", final)) < events.index(("fsync", str(cache.root)))


def test_an_altered_cache_salt_is_refused_with_the_file_to_remove(tmp_path: Path) -> None:
    store = Store("file:///nowhere", cache_dir=tmp_path)
    assert not (tmp_path / SALT_NAME).exists()  # reading records never touches the cache
    assert store.cache.root.parent == tmp_path  # first use creates the salt
    (tmp_path / SALT_NAME).write_bytes(b"short")
    with pytest.raises(ObjectCacheError, match=f"{tmp_path / SALT_NAME}.*remove it"):
        _ = Store("file:///nowhere", cache_dir=tmp_path).cache


def _committed(tmp_path: Path, data: bytes) -> tuple[ObjectCache, ObjectRef]:
    cache = ObjectCache(tmp_path / "cache")
    ref = ref_of(data)
    cache.commit(ref.digest, _staged(cache, ref, data))
    return cache, ref


def test_an_object_enters_read_only(tmp_path: Path) -> None:
    cache, ref = _committed(tmp_path, b"read only")
    assert stat.S_IMODE(cache.path(ref.digest).stat().st_mode) == 0o444


def test_a_rewrite_that_puts_the_mtime_back_is_hashed_again(tmp_path: Path) -> None:
    """A writer of the cache rewrites a verified object in place and restores its mtime: on
    main the remembered (dev, inode, size, mtime) still matched and the bytes were trusted."""
    cache, ref = _committed(tmp_path, b"verified bytes")
    path = cache.path(ref.digest)
    assert cache.verified(ref.digest)
    before = path.stat()
    path.chmod(0o644)
    path.write_bytes(b"verified BYTES")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    path.chmod(0o444)
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert not cache.verified(ref.digest) and not path.exists()


@pytest.mark.parametrize("swap", ["symlink", "rename"])
def test_an_object_swapped_after_its_check_is_not_handed_out(tmp_path: Path, swap: str) -> None:
    """Between a pull's check and its link, a writer of the cache directory replaces the object
    with a link to its own file, or renames its own file over it: on main ``link_into`` followed
    the link (or linked the new file) and the delta directory got the writer's bytes."""
    cache, ref = _committed(tmp_path, b"the object")
    assert cache.verified(ref.digest)
    evil = tmp_path / "evil"
    evil.write_bytes(b"other bytes")
    path = cache.path(ref.digest)
    if swap == "symlink":
        os.symlink(evil, tmp_path / "link")
        os.replace(tmp_path / "link", path)
    else:
        os.replace(evil, path)
    dest = tmp_path / "delta" / ref.digest
    dest.parent.mkdir()
    with pytest.raises(ObjectCacheError, match="changed after it was verified"):
        cache.link_into(ref.digest, dest)
    assert not dest.exists() and not os.path.lexists(path)


def test_a_link_into_is_the_very_file_checked(tmp_path: Path) -> None:
    cache, ref = _committed(tmp_path, b"the object")
    dest = tmp_path / "delta" / ref.digest
    dest.parent.mkdir()
    cache.link_into(ref.digest, dest)
    assert dest.stat().st_ino == cache.path(ref.digest).stat().st_ino
    assert dest.read_bytes() == b"the object"


def test_a_missing_object_is_reported_as_missing(tmp_path: Path) -> None:
    """An object gone from the cache is not an object that changed (on main it was reported as
    "changed after it was verified", which sent people looking for a tamperer)."""
    cache, ref = _committed(tmp_path, b"the object")
    cache.path(ref.digest).unlink()
    dest = tmp_path / "delta" / ref.digest
    dest.parent.mkdir()
    with pytest.raises(ObjectCacheError, match="the cached object is missing") as caught:
        cache.link_into(ref.digest, dest)
    assert "changed" not in str(caught.value) and "run again to fetch it" in str(caught.value)
    assert not dest.exists()


def test_a_writers_hash_is_trusted_only_for_the_file_it_wrote(tmp_path: Path) -> None:
    """A download hashed as it was written is committed without reading it again; a file put
    in its place since (a new inode) is hashed, and refused when it is not the object."""
    cache = ObjectCache(tmp_path)
    data = b"weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    staged = cache.staging_path(digest)
    with open(staged, "wb") as handle:
        handle.write(data)
        hashed = staged_hash(handle, digest)
    swapped = staged.with_name(staged.name + ".evil")
    swapped.write_bytes(b"poison!" * 1000)
    os.replace(swapped, staged)
    assert cache.commit(digest, staged, hashed=hashed) != digest
    assert not cache.has(digest)
    # the untouched file goes in on the writer's hash
    staged = cache.staging_path(digest)
    with open(staged, "wb") as handle:
        handle.write(data)
        hashed = staged_hash(handle, digest)
    assert cache.commit(digest, staged, hashed=hashed) == digest and cache.verified(digest)
