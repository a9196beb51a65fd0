"""Reading and writing a few elements of a tensor in a file, one mapped window at a time.

An in-place apply touches only the changed elements: it gathers their current values and later
scatters the new ones. Each window of the tensor (64 MiB) is memory-mapped, indexed and unmapped
before the next, so the process never holds more than one window of file-backed pages, however
large the tensor (peak RSS counts mapped pages). Writes land in the page cache; making them
durable is the caller's decision (see :mod:`deltaroll.checkpoint.state`).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltaroll.checkpoint.crashpoints import crash_point

WINDOW_BYTES = 64 << 20


@dataclass(frozen=True)
class TensorSpan:
    """``numel`` elements of ``dtype`` from byte ``begin`` of ``path``: one tensor's bytes."""

    path: Path
    begin: int
    numel: int
    dtype: np.dtype


def _windows(span: TensorSpan, positions: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(first element, index of its first position, index past its last) per window that holds
    any of the ascending ``positions``."""
    per_window = max(1, WINDOW_BYTES // span.dtype.itemsize)
    index = 0
    while index < positions.shape[0]:
        start = int(positions[index]) // per_window * per_window
        stop = int(np.searchsorted(positions, start + per_window, side="left"))
        yield start, index, stop
        index = stop


def _mapped(fd: int, span: TensorSpan, start: int, count: int, writable: bool) -> mmap.mmap:
    offset = span.begin + start * span.dtype.itemsize
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset - aligned + count * span.dtype.itemsize
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    return mmap.mmap(fd, length, offset=aligned, access=access)


# Called with (window, positions inside it, first index, index past the last).
WindowVisit = Callable[[np.ndarray, np.ndarray, int, int], None]


def _visit_windows(
    span: TensorSpan, positions: np.ndarray, visit: WindowVisit, *, writable: bool
) -> None:
    """Map each window that holds any of the ascending ``positions``, let ``visit`` index it,
    unmap it (a callback, not a generator: no view may outlive its mapping)."""
    per_window = max(1, WINDOW_BYTES // span.dtype.itemsize)
    fd = os.open(span.path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        for start, first, stop in _windows(span, positions):
            count = min(per_window, span.numel - start)
            with _mapped(fd, span, start, count, writable) as mapping:
                skip = (span.begin + start * span.dtype.itemsize) % mmap.ALLOCATIONGRANULARITY
                window = np.frombuffer(mapping, dtype=span.dtype, count=count, offset=skip)
                visit(window, positions[first:stop] - start, first, stop)
                del window
    finally:
        os.close(fd)


def gather(span: TensorSpan, positions: np.ndarray) -> np.ndarray:
    """The current values at ascending ``positions`` (int64, inside the tensor)."""
    out = np.empty(positions.shape[0], span.dtype)

    def read(window: np.ndarray, inside: np.ndarray, first: int, stop: int) -> None:
        out[first:stop] = window[inside]

    _visit_windows(span, positions, read, writable=False)
    return out


def scatter(span: TensorSpan, positions: np.ndarray, values: np.ndarray, tensor: str = "") -> None:
    """Write ``values`` at ascending ``positions`` (idempotent: the same call again is a no-op
    in effect, which is what lets a crashed apply simply run again)."""

    def write(window: np.ndarray, inside: np.ndarray, first: int, stop: int) -> None:
        # In two halves, so the crash tests can stop a write in the middle of a tensor.
        half = inside.shape[0] // 2
        window[inside[:half]] = values[first : first + half]
        crash_point("scatter-half", tensor)
        window[inside[half:]] = values[first + half : stop]

    _visit_windows(span, positions, write, writable=True)


def write_whole(span: TensorSpan, values: np.ndarray) -> None:
    """Write a whole tensor's new bytes at its offset (a dense change), window by window."""
    data = np.ascontiguousarray(values).reshape(-1).view(np.uint8).data
    fd = os.open(span.path, os.O_WRONLY)
    try:
        offset = span.begin
        while data:
            written = os.pwrite(fd, data[:WINDOW_BYTES], offset)
            data, offset = data[written:], offset + written
    finally:
        os.close(fd)
