"""Building a sparse payload from a change set fed window by window.

Why: a tensor diffed in windows used to keep every change as an int64 position plus both values
(12 bytes per bf16 change), then concatenate, argsort and re-encode them whole: a 1 GB tensor with
3 % changed peaked at 925 MB. Each window is now reduced at once, by one compiled pass, to what
the payload stores (a gap byte, the context and the change: 5 bytes per bf16 change); at the end
the change stream is grouped by context with a counting sort straight into byte planes. The bytes
are exactly those :mod:`deltaroll.codec.sparse` documents, however the change set was cut.
"""

from __future__ import annotations

import numpy as np

from deltaroll.codec.context import EXCEPTION_CONTEXT, context_shift
from deltaroll.codec.diff import SparseDiff
from deltaroll.codec.framing import Header, PayloadWriter
from deltaroll.codec.gaps import positions_to_gaps
from deltaroll.codec.kernel_loading import (
    compiled_kernels,
    diff_kernels,
    start_loading_kernels,
)
from deltaroll.codec.sparse import FORMAT_SPARSE

# Most changes grouped with numpy while the compiled kernels are not loaded: its stable argsort
# holds an int64 order and a gathered copy (10+ bytes per change, ~100 MB here), so a larger set
# waits for the kernel, whose load starts in the background as soon as a tensor's changes pass
# this count (a diff on the numpy stand-ins then loads numba only where it is needed).
NUMPY_GROUPING_MAX_CHANGES = 1 << 23


def bytes_per_change(width: int) -> int:
    """Bytes an encoder holds per change of ``width``-byte elements at its peak (building the
    payload): the joined contexts (2) and changes (width), their byte planes (width) and the
    compressed stream (about width). Long gaps (at most one per 255 elements of the tensor) and
    exceptions (rare: a step across an exponent) come on top."""
    return 2 + 3 * width


class SparseEncoder:
    """Accumulates the changes of a ``total``-element tensor of ``dtype`` (ascending windows)."""

    def __init__(self, dtype: np.dtype, total: int) -> None:
        self._dtype = np.dtype(dtype)
        self._total = total
        self._count = 0
        self._previous = -1
        self._short_gaps: list[np.ndarray] = []
        self._long_gaps: list[np.ndarray] = []
        self._contexts: list[np.ndarray] = []
        self._changes: list[np.ndarray] = []
        self._exception_ranks: list[np.ndarray] = []
        self._long_scratch = np.empty(0, np.uint64)

    def add(self, window: SparseDiff) -> None:
        """Add the changes of one window; its positions must follow the previous window's.
        Nothing of ``window`` is kept (its arrays may be a reused scratch)."""
        kernels = diff_kernels()
        count = window.positions.shape[0]
        if count and window.positions[-1] >= self._total:
            raise ValueError(f"a change at {window.positions[-1]} lies past the tensor's end")
        if self._long_scratch.shape[0] < count:
            self._long_scratch = np.empty(count, np.uint64)
        short_gaps = np.empty(count, np.uint8)
        contexts = np.empty(count, np.uint16)
        changes = np.empty(count, self._dtype)
        long_count = kernels.compact_changes(
            np.ascontiguousarray(window.positions, np.int64),
            np.ascontiguousarray(window.base_values, self._dtype),
            np.ascontiguousarray(window.target_values, self._dtype),
            self._previous,
            np.uint64(context_shift(self._dtype.itemsize)),
            np.uint64(8 * self._dtype.itemsize),
            short_gaps,
            contexts,
            changes,
            self._long_scratch,
        )
        if long_count == kernels.NOT_ASCENDING:
            raise ValueError("the changes of a sparse payload must have ascending positions")
        if count:
            self._previous = int(window.positions[-1])
        self._short_gaps.append(short_gaps)
        self._long_gaps.append(self._long_scratch[:long_count].copy())
        self._contexts.append(contexts)
        self._changes.append(changes)
        self._exception_ranks.append(np.flatnonzero(contexts == EXCEPTION_CONTEXT) + self._count)
        self._count += count
        if self._count > NUMPY_GROUPING_MAX_CHANGES:
            start_loading_kernels()

    def payload(self, level: int) -> bytes | bytearray:
        """The payload of every change added (emptying this encoder)."""
        writer = PayloadWriter(
            Header(FORMAT_SPARSE, self._dtype.itemsize, self._total, self._count)
        )
        writer.stream(_drain(self._short_gaps, np.uint8), level)
        writer.stream(_drain(self._long_gaps, np.uint64), level)
        exception_ranks = _drain(self._exception_ranks, np.int64)
        writer.small_int(exception_ranks.size)
        exception_gaps = positions_to_gaps(exception_ranks)
        writer.stream(exception_gaps.short, level)
        writer.stream(exception_gaps.long, level)
        writer.planes(self._grouped_change_planes(), level)
        return writer.finish()

    def _grouped_change_planes(self) -> np.ndarray:
        contexts = _drain(self._contexts, np.uint16)
        changes = _drain(self._changes, self._dtype)
        planes = np.empty(changes.size * self._dtype.itemsize, np.uint8)
        few = changes.size <= NUMPY_GROUPING_MAX_CHANGES
        (diff_kernels() if few else compiled_kernels()).group_planes(contexts, changes, planes)
        return planes


def _drain(parts: list[np.ndarray], dtype: type | np.dtype) -> np.ndarray:
    """The parts joined into one array, the list emptied so they are freed once joined."""
    joined = np.concatenate(parts) if parts else np.empty(0, dtype)
    parts.clear()
    return joined
