"""One side of a diffed tensor, mapped, faulted in and hashed by a thread of its own ahead of
the diff.

Why a thread per side that runs several windows ahead, not ``posix_fadvise(WILLNEED)``: the
advice makes the calling thread allocate and insert every page itself, one 4 KiB folio at a
time (``force_page_cache_ra``), which cost a 1 GB diff 0.3 s of system time, a third of its
kernel time, and left the page cache in small folios that every later mapping pays for again.
Faulting a mapping in (``MADV_POPULATE_READ``) reads through the kernel's own readahead in
large folios, but blocks until the pages are there; so a thread does it, a few windows ahead
of the compare, and hashes each window in order while it is still in the CPU's caches (BLAKE3
and the fault-in release the GIL). The disk streams while the diff computes, and each byte is
fetched from memory by the hash and the compare, never copied.
"""

from __future__ import annotations

import contextlib
import queue
import threading

import blake3
import numpy as np

from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.manifest_tensors import TensorSide
from deltaroll.checkpoint.reader import TensorFile

# Windows faulted in ahead of the one being diffed, per side: enough that the disk never waits
# for the compare (a window is ~4 ms of disk at 2 GB/s), few enough that the mapped windows
# stay a small part of the diff's peak RSS (mapped page-cache pages count).
WINDOWS_AHEAD = 3


class SideStream:
    """Windows of one tensor's side, read ahead in order by a loader thread.

    :meth:`read` follows the codec's window contract: the array it returns is read before the
    next call and not kept (each window's mapping goes with its last array). Windows are
    predicted to follow each other with the same count; any other request restarts the loader
    there. Use as a context manager (the loader is stopped on exit).
    """

    def __init__(self, file: TensorFile, ahead: int = WINDOWS_AHEAD) -> None:
        self._file = file
        self._ahead = ahead
        self._hasher = blake3.blake3()
        self._hashed = 0
        self._loader: _Loader | None = None

    def __enter__(self) -> SideStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def read(self, start: int, count: int) -> np.ndarray:
        """Elements ``[start, start + count)``, read-only, over the page cache."""
        loader = self._loader
        if loader is None or loader.next != (start, count):
            self._stop()
            loader = self._loader = _Loader(self, start, count)
        return loader.take()

    def side(self) -> TensorSide:
        """The side's manifest entry, once every element was read in order."""
        ref = self._file.ref
        if self._hashed != ref.numel:
            raise CheckpointError(f"tensor {ref.name!r} was not read whole; diff it again")
        return TensorSide(dtype=ref.dtype, shape=tuple(ref.shape), digest=self._hasher.hexdigest())

    def _load(self, start: int, count: int) -> np.ndarray:
        """Map and fault in one window, hashing it if it continues the hashed prefix (runs on
        the loader thread, in order)."""
        bits = self._file.map_window(start, count)
        if start == self._hashed:
            self._hasher.update(byte_view(bits))
            self._hashed += count
        return bits

    def _stop(self) -> None:
        if self._loader is not None:
            self._loader.stop()
            self._loader = None


class _Loader:
    """A thread loading consecutive windows from ``start`` into a queue ``ahead`` deep."""

    def __init__(self, stream: SideStream, start: int, count: int) -> None:
        self.next = (start, count)
        self._stream = stream
        self._numel = stream._file.ref.numel
        self._windows: queue.Queue[np.ndarray | BaseException] = queue.Queue(stream._ahead)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(start, count), name="diff-read", daemon=True
        )
        self._thread.start()

    def take(self) -> np.ndarray:
        """The next window (re-raising what its load raised)."""
        item = self._windows.get()
        if isinstance(item, BaseException):
            self.next = (-1, -1)  # the failed window is asked for again, by a new loader
            raise item
        start, count = self.next
        following = start + count
        self.next = (following, min(count, self._numel - following))
        return item

    def stop(self) -> None:
        """Stop the thread and drop the windows it mapped ahead."""
        self._stopping.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._windows.get(timeout=0.01)  # unblocks a put() waiting for room
        self._thread.join()

    def _run(self, start: int, count: int) -> None:
        for first in range(start, self._numel, count):
            if self._stopping.is_set():
                return
            try:
                item: np.ndarray | BaseException = self._stream._load(
                    first, min(count, self._numel - first)
                )
            except BaseException as exc:  # handed to the reader, which raises it
                item = exc
            self._windows.put(item)  # waits for room; stop() drains the queue to end the wait
            if isinstance(item, BaseException):
                return
