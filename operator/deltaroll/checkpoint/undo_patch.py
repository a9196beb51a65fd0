"""Patching a tensor in place behind the undo log (see :mod:`.journal`), and rolling it back.

A sparse tensor is patched window by window (64 MiB of it mapped for writing, its page tables
populated at once): one compiled loop reads the current values at the window's changed
positions and resolves the new ones (format 6 stores the per-context counts that makes this
possible before the rest of the tensor is read); the old values are appended to the undo log
and made durable; then the new ones are written while the window's pages are still at hand.
The caller hashes each chunk (positions, old and new values) as it goes and checks the
tensor's change digest at the end; on a mismatch it rolls back from the log. Compared with
reading every value first, then writing them all, the tensor's pages are visited once, and
the positions decoded once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.journal import UndoLog, UndoRecord
from deltaroll.checkpoint.scatter import WINDOW_BYTES, TensorSpan, tally
from deltaroll.codec.errors import CodecError
from deltaroll.codec.sparse import ChunkResolver, ContextTally, SparseChanges

# Linux 5.14+: populate the page tables of a mapping as a write would (the pages stay as they
# are; a window this dense has a change on nearly every page anyway).
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
# Changes held between reading and writing (then logged in one record, one fsync): bounds the
# memory (8 bytes of position and two values each) and, with the window, the number of fsyncs.
BATCH_POSITIONS = 1 << 22

# Called with each chunk: positions, the values read there, the values written there.
OnChunk = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _mapped(fd: int, span: TensorSpan, start: int, count: int) -> tuple[mmap.mmap, int]:
    """A writable mapping of elements ``[start, start + count)`` and where they begin in it."""
    offset = span.begin + start * span.dtype.itemsize
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset - aligned + count * span.dtype.itemsize
    return mmap.mmap(fd, length, offset=aligned, access=mmap.ACCESS_WRITE), offset - aligned


def context_counts(span: TensorSpan, changes: SparseChanges) -> np.ndarray | None:
    """The per-context counts a :class:`ChunkResolver` needs: the payload's (format 6), or
    counted by reading the current values at every changed position (format 4)."""
    if changes.context_counts is not None:
        return None
    counter = ContextTally(changes, span.dtype)
    tally(span, changes.positions(), counter)
    return counter.counts()


class _Batch:
    """Buffers for one batch of changes: positions, the values read, the values to write."""

    def __init__(self, size: int, dtype: np.dtype) -> None:
        self.positions = np.empty(size, np.int64)
        self.known = np.empty(size, dtype)
        self.resolved = np.empty(size, dtype)


class _Window:
    """One mapped window of a tensor, writable."""

    def __init__(self, fd: int, span: TensorSpan, start: int, count: int, taken: int) -> None:
        self.start = start
        self.mapping, skip = _mapped(fd, span, start, count)
        if taken >= count * span.dtype.itemsize // mmap.PAGESIZE:
            with contextlib.suppress(OSError):  # a kernel before 5.14 simply faults
                self.mapping.madvise(MADV_POPULATE_WRITE)
        self.values: np.ndarray | None = np.frombuffer(
            self.mapping, dtype=span.dtype, count=count, offset=skip
        )

    def close(self) -> None:
        self.values = None  # the only view of the mapping: it can be closed
        self.mapping.close()


def patch_sparse(
    span: TensorSpan,
    changes: SparseChanges,
    *,
    forward: bool,
    undo: UndoLog,
    tensor: str,
    on_chunk: OnChunk,
) -> None:
    """Turn the known side's values at the change set's positions into the other side's,
    logging each batch of old values (durably) before writing it. Raises :class:`CodecError`
    when the values do not fit the payload; what was written by then is in the log.

    Two cores: while a worker thread hashes a batch, logs it, syncs the log and writes the
    batch, this thread reads and resolves the next one (the compiled loops, zstd, BLAKE3 and
    fsync release the GIL). Batches are logged and written in order, one at a time."""
    resolver = ChunkResolver(changes, forward=forward, counts=context_counts(span, changes))
    cursor = changes.positions()
    size = min(BATCH_POSITIONS, max(cursor.remaining, 1))
    batches = (_Batch(size, span.dtype), _Batch(size, span.dtype))
    per_window = max(1, WINDOW_BYTES // span.dtype.itemsize)
    windows: list[_Window] = []  # the window being resolved last; before it, one being written
    pending: Future[None] | None = None
    failure: BaseException | None = None
    current = 0
    fd = os.open(span.path, os.O_RDWR)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltaroll-patch")

    def flush(window: _Window, batch: _Batch, taken: int, first: int) -> None:
        where, known, resolved = (
            batch.positions[:taken],
            batch.known[:taken],
            batch.resolved[:taken],
        )
        on_chunk(where, known, resolved)
        undo.append(tensor, known, whole=False, first=first)
        undo.sync()
        crash_point("window-logged", tensor)
        assert window.values is not None
        _write(window.values, where, window.start, resolved, tensor)
        crash_point("window-patched", tensor)

    try:
        for start in range(0, span.numel, per_window):
            if not cursor.remaining:
                break
            count = min(per_window, span.numel - start)
            batch = batches[current]
            taken = cursor.take(start + count, batch.positions)
            if not taken:
                continue
            window = _Window(fd, span, start, count, taken)
            windows.append(window)
            while taken:
                batch = batches[current]
                first = resolver.resolved
                assert window.values is not None
                resolver.resolve(
                    window.values,
                    batch.positions[:taken],
                    start,
                    batch.known[:taken],
                    batch.resolved[:taken],
                )
                if pending is not None:
                    pending.result()  # the previous batch logged and written
                while len(windows) > 1:  # a window whose batches were all written
                    windows.pop(0).close()
                pending = worker.submit(flush, window, batch, taken, first)
                more = taken == size
                current ^= 1
                taken = cursor.take(start + count, batches[current].positions) if more else 0
        if pending is not None:
            pending.result()
    except BaseException as exc:  # noqa: BLE001 - raised again below, once the windows close
        # Without its traceback, whose frames hold views of the mappings.
        failure = exc.with_traceback(None)
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                pending.result()  # never leave a write running behind the caller's back
        worker.shutdown(wait=True)
        for window in windows:
            window.close()
        os.close(fd)
    if failure is not None:
        raise failure
    if resolver.resolved != changes.count:
        raise CodecError("the change set's positions and changes do not pair up; corrupt")


def _write(
    window: np.ndarray, positions: np.ndarray, start: int, values: np.ndarray, tensor: str
) -> None:
    from deltaroll.codec import kernels

    # In two halves, so the crash tests can stop a write in the middle of a window.
    half = positions.shape[0] // 2
    kernels.scatter(window, positions[:half], start, values[:half])
    crash_point("scatter-half", tensor)
    kernels.scatter(window, positions[half:], start, values[half:])


def roll_back_sparse(span: TensorSpan, changes: SparseChanges, records: list[UndoRecord]) -> None:
    """Write each record's old values back at its positions (records of this tensor, in the
    order they were logged: ascending ranks)."""
    from deltaroll.codec import kernels

    cursor = changes.positions()
    skip = np.empty(min(BATCH_POSITIONS, max(changes.count, 1)), np.int64)
    fd = os.open(span.path, os.O_RDWR)
    try:
        for record in records:
            if record.first < cursor.taken or record.first + record.count > changes.count:
                raise CodecError(f"undo record at change {record.first} out of order")
            while cursor.taken < record.first:
                cursor.take(span.numel, skip[: min(skip.shape[0], record.first - cursor.taken)])
            positions = np.empty(record.count, np.int64)
            if cursor.take(span.numel, positions) != record.count:
                raise CodecError("undo record lists more changes than the payload")
            if not record.count:
                continue
            low, high = int(positions[0]), int(positions[-1])
            mapping, offset = _mapped(fd, span, low, high - low + 1)
            with mapping:
                window = np.frombuffer(
                    mapping, dtype=span.dtype, count=high - low + 1, offset=offset
                )
                kernels.scatter(window, positions, low, record.read())
                del window
    finally:
        os.close(fd)
