"""Reading and writing a few elements of a tensor in a file, one mapped window at a time.

An in-place apply touches only the changed elements: it gathers their current values and later
scatters the new ones. Each window of the tensor (64 MiB) is memory-mapped, indexed by compiled
loops and unmapped before the next, so the process never holds more than one window of
file-backed pages, however large the tensor (peak RSS counts mapped pages). Positions come from
a :class:`~deltaroll.codec.gaps.PositionCursor`, a bounded chunk at a time, never as a whole
tensor's int64 array. Writes land in the page cache; making them durable is the caller's
decision (see :mod:`deltaroll.checkpoint.state`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.codec.gaps import PositionCursor

WINDOW_BYTES = 64 << 20
# Linux 5.14+: populate the page tables of a mapping, reading (not dirtying) its pages.
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
# Positions decoded at a time (8 MiB of int64): bounds memory, stays in the cache.
CHUNK_POSITIONS = 1 << 20


@dataclass(frozen=True)
class TensorSpan:
    """``numel`` elements of ``dtype`` from byte ``begin`` of ``path``: one tensor's bytes."""

    path: Path
    begin: int
    numel: int
    dtype: np.dtype


def _mapped(fd: int, span: TensorSpan, start: int, count: int, writable: bool) -> mmap.mmap:
    offset = span.begin + start * span.dtype.itemsize
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset - aligned + count * span.dtype.itemsize
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    return mmap.mmap(fd, length, offset=aligned, access=access)


def _populate(mapping: mmap.mmap) -> None:
    """Map every page of a window whose chunk holds a change per page or more in one call,
    rather than a fault per few pages (a sparser window faults in only what it reads); a
    kernel without MADV_POPULATE_READ simply faults."""
    with contextlib.suppress(OSError):
        mapping.madvise(MADV_POPULATE_READ)


# Called with (window, its first element, a chunk of positions inside it, index of the chunk's
# first position among all of them).
ChunkVisit = Callable[[np.ndarray, int, np.ndarray, int], None]


def _visit_chunks(
    span: TensorSpan, cursor: PositionCursor, visit: ChunkVisit, *, writable: bool
) -> None:
    """Map each window that holds any of the cursor's positions, let ``visit`` index it a chunk
    of positions at a time, unmap it (a callback, not a generator: no view may outlive its
    mapping). Consumes the cursor."""
    per_window = max(1, WINDOW_BYTES // span.dtype.itemsize)
    chunk = np.empty(min(CHUNK_POSITIONS, cursor.remaining), np.int64)
    done = 0
    fd = os.open(span.path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        for start in range(0, span.numel, per_window):
            count = min(per_window, span.numel - start)
            taken = cursor.take(start + count, chunk)
            if not taken:
                continue
            with _mapped(fd, span, start, count, writable) as mapping:
                if not writable and taken >= count * span.dtype.itemsize // mmap.PAGESIZE:
                    _populate(mapping)
                skip = (span.begin + start * span.dtype.itemsize) % mmap.ALLOCATIONGRANULARITY
                window = np.frombuffer(mapping, dtype=span.dtype, count=count, offset=skip)
                while taken:
                    visit(window, start, chunk[:taken], done)
                    done += taken
                    more = taken == chunk.shape[0]
                    taken = cursor.take(start + count, chunk) if more else 0
                del window
    finally:
        os.close(fd)


def gather(
    span: TensorSpan,
    cursor: PositionCursor,
    out: np.ndarray,
    on_positions: Callable[[np.ndarray], None],
) -> None:
    """Fill ``out`` with the current values at the cursor's positions (one per position), and
    show each chunk of positions to ``on_positions`` (a hash) while it is at hand."""
    from deltaroll.codec import kernels

    def read(window: np.ndarray, start: int, positions: np.ndarray, first: int) -> None:
        kernels.gather(window, positions, start, out[first : first + positions.shape[0]])
        on_positions(positions)

    _visit_chunks(span, cursor, read, writable=False)


# (index of the first position, how many) -> the new values there.
ValueSource = Callable[[int, int], np.ndarray]


def scatter(
    span: TensorSpan, cursor: PositionCursor, values: ValueSource, tensor: str = ""
) -> None:
    """Write the new values at the cursor's positions (idempotent: the same call again is a
    no-op in effect, which is what lets a crashed apply simply run again)."""
    from deltaroll.codec import kernels

    def write(window: np.ndarray, start: int, positions: np.ndarray, first: int) -> None:
        new = values(first, positions.shape[0])
        # In two halves, so the crash tests can stop a write in the middle of a tensor.
        half = positions.shape[0] // 2
        kernels.scatter(window, positions[:half], start, new[:half])
        crash_point("scatter-half", tensor)
        kernels.scatter(window, positions[half:], start, new[half:])

    _visit_chunks(span, cursor, write, writable=True)


def write_whole(span: TensorSpan, values: ValueSource) -> None:
    """Write a whole tensor's new bytes at its offset (a dense change), a window at a time:
    each window's values are asked of ``values`` only when it is written, so memory holds one
    window, never the tensor."""
    per_window = max(1, WINDOW_BYTES // span.dtype.itemsize)
    fd = os.open(span.path, os.O_WRONLY)
    try:
        for first in range(0, span.numel, per_window):
            window = values(first, min(per_window, span.numel - first))
            data = np.ascontiguousarray(window).reshape(-1).view(np.uint8).data
            offset = span.begin + first * span.dtype.itemsize
            while data:
                written = os.pwrite(fd, data, offset)
                data, offset = data[written:], offset + written
    finally:
        os.close(fd)
