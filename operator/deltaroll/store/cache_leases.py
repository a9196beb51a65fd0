"""Which cached objects some live process still uses: lease files under a kernel file lock.

Each process that uses a scope of the cache writes the objects it needs into its own lease file
and holds an exclusive ``flock`` on it until it exits (the kernel drops the lock of a killed
process, so a crashed agent never pins objects forever). A pruner takes the scope's lock
exclusively, counts only leases it cannot lock itself (their holders live) and removes a lease
nobody holds. Leases change only under the scope's lock held shared, so a pruner sees each lease
either before or after a change, never half of it; a process names an object in its lease before
it looks for it in the cache, so a prune either keeps it or ran before the look (and the object
is fetched again). ``flock`` works across processes and containers on one kernel and over NFS
(Linux emulates it with NFS byte-range locks)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import structlog
from pydantic import ValidationError

from deltaroll.api.object_cache import (
    LEASE_SUFFIX,
    LEASES_DIR,
    LOCK_NAME,
    MAX_LEASE_BYTES,
    CacheLease,
)

log = structlog.get_logger(__name__)


class CacheLeases:
    """The lock of one cache scope, this process's lease in it, and everyone's live leases."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._leases = directory / LEASES_DIR
        self._holds: Counter[str] = Counter()  # holds per object: this process's users
        self._held: set[str] = set()  # what its lease file names
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the scope's lock: shared to enter objects or change a lease (a use of the scope:
        the lock file's mtime says when it was last used), exclusive to prune."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if not exclusive:
                with contextlib.suppress(OSError):  # a lock file of another user's: no mark
                    os.utime(fd)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

    def hold(self, digests: Iterable[str]) -> None:
        """Hold each of ``digests`` once more (call before looking for them in the cache)."""
        with self._mutex:
            self._holds.update(set(digests))
            self._sync()

    def release(self, digests: Iterable[str]) -> None:
        """Undo one :meth:`hold` of each of ``digests``; the lease names what is still held
        (and goes when nothing is)."""
        with self._mutex:
            self._holds.subtract(set(digests))
            self._holds = +self._holds  # only positive counts
            self._sync()

    def live(self) -> set[str] | None:
        """Every object a live lease names; None when a live lease cannot be read (then nothing
        may be pruned). Call with the scope's lock held exclusively."""
        if not self._leases.is_dir():
            return set()
        named: set[str] = set()
        for path in self._leases.iterdir():
            objects = _read_if_live(path)
            if objects is None:
                log.warning("store.cache_lease_unreadable", lease=str(path))
                return None
            named |= objects
        return named

    def _sync(self) -> None:
        """Make the lease file name exactly what this process holds."""
        digests = set(self._holds)
        if digests == self._held:
            return
        with self.locked(exclusive=False):
            if not digests:
                self._drop()
            else:
                handle = self._file or self._create()
                holder = f"{socket.gethostname()}:{os.getpid()}"
                data = CacheLease(holder=holder, objects=sorted(digests)).model_dump_json()
                handle.seek(0)
                handle.truncate()
                handle.write(data.encode())
                handle.flush()
        self._held = digests

    def _create(self) -> BinaryIO:
        """A new lease file, locked before anyone can see it unlocked (we hold the scope's lock
        shared, so no pruner is looking)."""
        self._leases.mkdir(parents=True, exist_ok=True)
        path = self._leases / f"{uuid.uuid4().hex}{LEASE_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file, self._path = os.fdopen(fd, "r+b"), path
        return self._file

    def _drop(self) -> None:
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        if self._file is not None:
            self._file.close()
        self._file = self._path = None


def _read_if_live(path: Path) -> set[str] | None:
    """The objects a lease names if its holder lives; an empty set (and the file removed) if
    nobody holds it; None if a live lease cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return set()
    except OSError:  # not a regular file we may open: someone put it there on purpose
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            data = handle.read(MAX_LEASE_BYTES + 1)
            if len(data) > MAX_LEASE_BYTES:
                return None
            try:
                return set(CacheLease.model_validate_json(data).objects)
            except ValidationError:
                return None
        path.unlink(missing_ok=True)  # its holder is gone
        return set()
