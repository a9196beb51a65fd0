"""The local object cache: objects keyed by sha256, safe to share between processes.

The layout is a contract between every process that shares a directory
(:mod:`deltaroll.api.object_cache`). An :class:`ObjectCache` is one scope of it: the objects of
one store URI fetched with one set of credentials (:func:`~deltaroll.store.cache_scope.scope_of`
picks it), so an agent never obtains an object it could not have fetched itself.

- **Entering**: a download lands in ``.partial/``, is checked against its sha256, fsynced, renamed
  into place and the directory fsynced, so a power loss never leaves a torn file under its name.
- **Reading**: :meth:`ObjectCache.verified` trusts a file only once its bytes were hashed (once per
  process per file identity: device, inode, size, mtime and ctime, which no ``utime`` can set
  back); a torn or wrong file is removed, if it is still the file that was hashed, and the
  caller fetches it again. Objects are read-only (0444) and opened without following links: a
  writer of the cache directory who swaps an object for a link or rewrites it gets it refused.
- **Handing out**: :meth:`ObjectCache.link_into` links the very file it opened and checked
  (through its descriptor), never whatever the name points at by then.
- **Sharing**: a process names the objects it uses in its lease (:meth:`ObjectCache.hold`) before
  it looks for them; :meth:`ObjectCache.prune` removes only what no live lease names.

Usage (what a pull does)::

    cache.hold(digests)                       # before looking: no prune removes them now
    missing = [d for d in digests if not cache.verified(d)]
    ...download each into cache.staging_path(d), then cache.commit(d, staged)...
    ...read cache.path(d) / cache.link_into(d, dest)...
    cache.release(digests)                    # done with them
    cache.prune(among=digests)                # drop them unless another process holds them
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import structlog

from deltaroll.api.object_cache import PARTIAL_DIR
from deltaroll.checkpoint.staging import fsync_directory
from deltaroll.store.cache_arrivals import ARRIVALS
from deltaroll.store.cache_leases import CacheLeases
from deltaroll.store.errors import ObjectCacheError
from deltaroll.store.manifests import ObjectRef
from deltaroll.store.names import is_digest, validate_digest

log = structlog.get_logger(__name__)

_READ_BLOCK = 8 << 20
#: How many verified file identities a process remembers (then it hashes the oldest again).
_REMEMBERED: Final = 65536
FileIdentity = tuple[int, int, int, int, int]
#: Objects are never written after they enter: read-only for everyone.
_READ_ONLY: Final = 0o444


def default_cache_dir() -> Path:
    """$DELTAROLL_CACHE_DIR, else $XDG_CACHE_HOME/deltaroll/objects, else ~/.cache/..."""
    explicit = os.environ.get("DELTAROLL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deltaroll" / "objects"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256(handle.fileno())


class ObjectCache:
    """A directory of objects named by their sha256, ``<directory>/<sha256>`` (one scope)."""

    def __init__(self, directory: Path) -> None:
        self.root = Path(directory)
        self.partial = self.root / PARTIAL_DIR
        self._leases = CacheLeases(self.root)

    def path(self, digest: str) -> Path:
        return self.root / validate_digest(digest)

    def has(self, digest: str) -> bool:
        """Whether a file is under the name (for planning; :meth:`verified` before trusting it)."""
        return self.path(digest).is_file()

    def verified(self, digest: str) -> bool:
        """Whether the cache holds ``digest`` with the right bytes. A torn or wrong file is
        removed (so the caller fetches it again); a file hashed before is not hashed again."""
        handle = self.open_verified(digest)
        if handle is None:
            return False
        handle.close()
        return True

    def open_verified(self, digest: str) -> BinaryIO | None:
        """The file of ``digest`` opened (no link followed) and known to hold its bytes, at its
        start, or None (a torn or wrong file is removed); hashed once per file identity, so a
        server reading an object for many clients hashes it once, and again only if it changed."""
        try:
            return self._open_checked(digest)
        except FileNotFoundError:
            return None

    def arriving_bytes(self, digest: str) -> int | None:
        """How much of ``digest`` a download under way has staged (the most of any), or None
        when none is staging it."""
        sizes = []
        for staged in self.partial.glob(f"{validate_digest(digest)}.*"):
            try:
                sizes.append(staged.stat().st_size)
            except FileNotFoundError:  # committed or given up meanwhile
                continue
        return max(sizes, default=None)

    def open_arriving(self, digest: str, wait_s: float) -> BinaryIO | None:
        """:meth:`open_verified`, waiting up to ``wait_s`` for the object to be committed (by
        this process: at once; by another sharing the directory: within a second)."""
        return ARRIVALS.wait_for(lambda: self.open_verified(digest), wait_s)

    def _open_checked(self, digest: str) -> BinaryIO | None:
        """:meth:`open_verified`, raising FileNotFoundError when there is no file at all."""
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise
        except OSError:  # a link or something else that is not our file
            self._discard(digest, None)
            return None
        try:
            info = os.fstat(fd)
            identity = _identity(info)
            regular = stat.S_ISREG(info.st_mode)
            known = regular and _VERIFIED.known(identity, digest)
            actual = digest if known else (_sha256(fd) if regular else None)
        except BaseException:
            os.close(fd)
            raise
        if actual == digest:
            _VERIFIED.remember(identity, digest)
            os.lseek(fd, 0, os.SEEK_SET)
            return os.fdopen(fd, "rb")
        os.close(fd)
        log.warning("store.cache_object_discarded", digest=digest, found=actual)
        self._discard(digest, identity)
        return None

    def staging_path(self, digest: str) -> Path:
        """A fresh place for a download of ``digest`` before it is verified (unique, so two
        pulls sharing the cache never write the same file)."""
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial / f"{validate_digest(digest)}.{uuid.uuid4().hex[:12]}"

    def commit(
        self,
        digest: str,
        staged: Path,
        *,
        discard_mismatch: bool = True,
        hashed: StagedHash | None = None,
    ) -> str:
        """Verify a staged download and move it into the cache if it is ``digest`` (fsynced
        before the rename, the directory after); a mismatch is deleted unless
        ``discard_mismatch`` is False. ``hashed``: the writer hashed the bytes as it wrote them
        (:func:`staged_hash`); trusted only while the file is still the one it wrote. Returns
        the file's actual sha256."""
        with open(staged, "rb", opener=_no_follow) as handle:
            info = os.fstat(handle.fileno())
            if hashed is not None and hashed.identity == _identity(info):
                actual = hashed.digest
            else:
                actual = _sha256(handle.fileno())
            if actual != digest:
                if discard_mismatch:
                    staged.unlink(missing_ok=True)
                return actual
            os.fchmod(handle.fileno(), _READ_ONLY)
            os.fsync(handle.fileno())
            with self._leases.locked(exclusive=False):  # never while a bad file is removed
                os.replace(staged, self.path(digest))
            # after the rename (which moves ctime), of the file itself: readers skip hashing
            identity = _identity(os.fstat(handle.fileno()))
        fsync_directory(self.root)
        _VERIFIED.remember(identity, digest)
        ARRIVALS.landed()
        return actual

    def adopt_staged(self, refs: Iterable[ObjectRef]) -> int:
        """Commit complete downloads that an interrupted run left in staging; bytes adopted.

        Files that do not (yet) verify are left alone: another pull sharing the cache may still
        be writing them."""
        if not self.partial.is_dir():
            return 0
        adopted = 0
        for ref in refs:
            for staged in self.partial.glob(f"{validate_digest(ref.digest)}.*"):
                if self.has(ref.digest):
                    break
                with contextlib.suppress(FileNotFoundError):  # taken by a concurrent pull
                    if self.commit(ref.digest, staged, discard_mismatch=False) == ref.digest:
                        adopted += ref.size
        return adopted

    def link_into(self, digest: str, dest: Path) -> None:
        """Make ``dest`` the cached object: a hard link to the very file opened (no link
        followed) and known to hold ``digest`` (hashed again if it is not that known file),
        or a copy from it when the filesystem cannot link. :class:`ObjectCacheError` when the
        file is not the object any more (it is removed: fetch again) or is missing."""
        try:
            handle = self._open_checked(digest)
        except FileNotFoundError as exc:
            raise ObjectCacheError(
                f"{self.path(digest)}: the cached object is missing (removed since it was "
                "fetched, by hand or by a process that did not hold it); nothing was applied: "
                "run again to fetch it"
            ) from exc
        if handle is None:
            raise _changed(digest, self.root)
        with handle:
            dest.unlink(missing_ok=True)
            try:
                _link_open_file(handle.fileno(), dest)
            except OSError:
                _copy_from(handle.fileno(), dest)

    def hold(self, digests: Iterable[str]) -> None:
        """Name ``digests`` in this process's lease: no prune (by any process) removes them
        until each hold is released. Call before looking for them in the cache."""
        self._leases.hold(validate_digest(digest) for digest in digests)

    def release(self, digests: Iterable[str]) -> None:
        """Undo one :meth:`hold` of each of ``digests`` (holds are counted, so two users in
        one process do not release each other's)."""
        self._leases.release(digests)

    def prune(self, among: Iterable[str] | None = None) -> int:
        """Remove the objects (of ``among``, or all) and downloads in progress that no live
        process holds, this one included; returns objects removed."""
        with self._leases.locked(exclusive=True):
            live = self._leases.live()
            if live is None:
                return 0
            if among is None:
                candidates = {p.name for p in self.root.iterdir() if is_digest(p.name)}
                partial = list(self.partial.glob("*")) if self.partial.is_dir() else []
            else:
                candidates = {validate_digest(digest) for digest in among}
                partial = [p for d in candidates for p in self.partial.glob(f"{d}.*")]
            removed = 0
            for digest in candidates - live:
                with contextlib.suppress(FileNotFoundError):
                    (self.root / digest).unlink()
                    removed += 1
            for staged in partial:
                if staged.name.split(".", 1)[0] not in live:
                    staged.unlink(missing_ok=True)
        return removed

    def _discard(self, digest: str, identity: FileIdentity | None) -> None:
        """Remove the file under ``digest`` if it still is the one judged bad (a concurrent
        commit may have put a good one there since)."""
        path = self.path(digest)
        with self._leases.locked(exclusive=True), contextlib.suppress(FileNotFoundError):
            if identity is None or _identity(os.lstat(path)) == identity:
                path.unlink()


@dataclass(frozen=True)
class StagedHash:
    """The sha256 of a staged file from its bytes as they were written, and the file's
    identity right after (any later write or replacement changes it)."""

    digest: str
    identity: FileIdentity


def staged_hash(handle: BinaryIO, digest: str) -> StagedHash:
    """What :meth:`ObjectCache.commit` needs to skip hashing a file again: ``handle`` is the
    staged file just written, ``digest`` the sha256 of every byte written to it."""
    handle.flush()
    return StagedHash(digest, _identity(os.fstat(handle.fileno())))


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


class _VerifiedFiles:
    """File identities whose bytes this process hashed, and the digest they had."""

    def __init__(self) -> None:
        self._known: OrderedDict[FileIdentity, str] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, identity: FileIdentity, digest: str) -> bool:
        with self._lock:
            return self._known.get(identity) == digest

    def remember(self, identity: FileIdentity, digest: str) -> None:
        with self._lock:
            self._known[identity] = digest
            self._known.move_to_end(identity)
            while len(self._known) > _REMEMBERED:
                self._known.popitem(last=False)


_VERIFIED = _VerifiedFiles()


def _identity(info: os.stat_result) -> FileIdentity:
    """What changes when a file is replaced or rewritten: a new inode, size, mtime, or ctime
    (which the kernel sets on every write or chmod, and no process can set back)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _changed(digest: str, root: Path) -> ObjectCacheError:
    return ObjectCacheError(
        f"{root / digest}: the cached object changed after it was verified (replaced, linked "
        "elsewhere or rewritten); it was removed and nothing was applied: run again to fetch it"
    )


def _link_open_file(fd: int, dest: Path) -> None:
    """linkat(2) of the open file itself through /proc/self/fd with AT_SYMLINK_FOLLOW, as
    open(2) documents for O_TMPFILE (a directory descriptor makes Python call linkat with
    that flag rather than link(2), which would not follow the magic link)."""
    directory = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"/proc/self/fd/{fd}", dest.name, dst_dir_fd=directory, follow_symlinks=True)
    finally:
        os.close(directory)


def _copy_from(fd: int, dest: Path) -> None:
    """Copy the open file ``fd`` (from its start) to the new file ``dest``."""
    os.lseek(fd, 0, os.SEEK_SET)
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _READ_ONLY)
    try:
        while block := os.read(fd, _READ_BLOCK):
            view = memoryview(block)
            while view:
                view = view[os.write(out, view) :]
    finally:
        os.close(out)


def _sha256(fd: int) -> str:
    hasher = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, _READ_BLOCK):
        hasher.update(block)
    return hasher.hexdigest()
