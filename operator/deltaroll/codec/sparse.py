"""Sparse delta: where the changed elements are, and how each changed, coded given the base.

Layout of the payload after the header (each stream zstd-compressed byte planes):

1. positions of the changed elements, as byte gaps plus a stream of long gaps;
2. exceptions: ranks, among the changed elements, of those whose context differs between base
   and target, as byte gaps plus long gaps (their count first);
3. the change of every changed element, ``target - base`` modulo 2**bits as a zigzag-coded
   signed number, grouped by context.

Why a difference rather than an XOR: a ±1 ULP step is 1 or -1 whatever the mantissa, where its
XOR is a run of ones whose length depends on the carry; both are reversible. Grouping by context
puts the many-ULP changes of small weights apart from the ±1 steps of large ones, so each part of
the stream has one distribution for zstd's entropy stage. A decoder that holds the target (a
rollback) derives the same contexts, because every element whose context differs between the two
sides is listed as an exception and grouped apart.

Format 6 (what the encoder writes) adds, between 2. and 3., how many changes each context
0..255 holds (256 varints; the exceptions' count is 2.'s): the group boundaries of 3. A decoder
needs them before it can resolve any change, and they follow from the known values at *all*
positions; stored, they let an in-place apply resolve a window of positions as soon as it has
read it (see :class:`ChunkResolver`). Format 4 payloads (without them) still decode: the apply
counts the contexts in a reading pass of its own first (see :class:`ContextTally`).

This module decodes; :mod:`deltaroll.codec.sparse_encoder` builds the payload.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from deltaroll.codec.context import EXCEPTION_CONTEXT, context_shift
from deltaroll.codec.errors import CodecError
from deltaroll.codec.framing import ELEMENT_DTYPES, PayloadReader, PayloadWriter
from deltaroll.codec.gaps import (
    ESCAPE,
    GapStreams,
    PositionCursor,
    gaps_to_positions,
)

FORMAT_SPARSE = 4
FORMAT_SPARSE_COUNTED = 6  # format 4 plus the per-context counts (5 is the dense XOR)
SPARSE_FORMATS = (FORMAT_SPARSE, FORMAT_SPARSE_COUNTED)


def write_context_counts(writer: PayloadWriter, counts: np.ndarray) -> None:
    """Format 6's section: how many (non-exception) changes each context 0..255 holds, as the
    number of contexts that hold any, then for each its distance from the previous one and its
    count (varints: a few bytes for a small tensor, well under a hundred for a model's)."""
    assert counts.shape == (EXCEPTION_CONTEXT,)
    held = np.flatnonzero(counts)
    writer.small_int(held.size)
    previous = -1
    for context in held:
        writer.small_int(int(context) - previous - 1)
        writer.small_int(int(counts[context]))
        previous = int(context)


def _read_context_counts(reader: PayloadReader, changed: int, exceptions: int) -> np.ndarray:
    """Format 6's counts, as 257 (the exceptions' last), checked to add up."""
    counts = np.zeros(EXCEPTION_CONTEXT + 1, np.int64)
    held = reader.small_int()
    context = -1
    for _ in range(min(held, EXCEPTION_CONTEXT + 1)):
        context += reader.small_int() + 1
        if context >= EXCEPTION_CONTEXT:
            raise CodecError("delta payload's per-context counts name no context; corrupt")
        counts[context] = min(reader.small_int(), changed + 1)  # bounded: the sum cannot wrap
    counts[EXCEPTION_CONTEXT] = exceptions
    if held > EXCEPTION_CONTEXT or int(counts.sum()) != changed:
        raise CodecError("delta payload's per-context counts do not add up; corrupt")
    return counts


def _read_gaps(reader: PayloadReader, count: int) -> GapStreams:
    short = reader.planes(ELEMENT_DTYPES[1], count)  # one byte per gap: its planes are the gaps
    escapes = int(np.count_nonzero(short == ESCAPE))
    return GapStreams(short, reader.stream(ELEMENT_DTYPES[8], escapes))


@dataclass(frozen=True)
class SparseChanges:
    """A sparse payload decoded: where the changed elements are and how each changes.

    The values on the other side follow from the known side's values *at the positions only*,
    so an in-place apply can gather those few values from a file instead of reading the tensor.
    Positions stay gap streams (1 byte per change, decoded a window at a time by
    :meth:`positions`), so a change set costs a few bytes per changed element, not the 8 of
    int64 positions.
    """

    total: int  # elements of the tensor
    gaps: GapStreams  # the changed positions
    exception_ranks: np.ndarray  # int64, ascending, below the number of changes
    # Zigzag changes grouped by context, one per position: decompressed in the background
    # while the caller gathers the known values (see sorted_changes).
    pending_changes: Future[np.ndarray]
    # Changes per context (0..255, then the exceptions'): format 6 stores them; None for format
    # 4, whose apply counts them from the known values first (ContextTally).
    context_counts: np.ndarray | None = None

    @property
    def sorted_changes(self) -> np.ndarray:
        """The changes, once decompressed (raises :class:`CodecError` if they do not)."""
        return self.pending_changes.result()

    @property
    def count(self) -> int:
        return int(self.gaps.short.shape[0])

    def positions(self) -> PositionCursor:
        """A fresh cursor over the changed positions, ascending."""
        return PositionCursor(self.gaps, self.total)

    def resolve(self, values: np.ndarray, *, forward: bool) -> None:
        """Turn ``values``, the known side's values at the positions (``forward``: the base's),
        into the other side's, in place. Raises :class:`CodecError` if they do not fit (then
        ``values`` is partly changed: pass a copy of anything that must survive)."""
        sorted_changes = self.sorted_changes
        if values.shape != sorted_changes.shape or values.dtype != sorted_changes.dtype:
            raise CodecError("the known values do not match the change set's length or width")
        # Imported here: numba and the cached kernels take ~0.4 s to load.
        from deltaroll.codec import kernels

        problem = kernels.resolve_changes(
            values,
            self.exception_ranks,
            sorted_changes,
            forward,
            np.uint64(context_shift(values.dtype.itemsize)),
        )
        _raise_problem(problem)


class ContextTally:
    """Counts the contexts of the known values, a chunk of positions at a time (in order, all of
    them): what a format-4 payload lacks before :class:`ChunkResolver` can start."""

    def __init__(self, changes: SparseChanges, dtype: np.dtype) -> None:
        from deltaroll.codec import kernels

        self._changes = changes
        self._shift = np.uint64(context_shift(np.dtype(dtype).itemsize))
        self._state = np.zeros(kernels.STATE_SIZE, np.int64)

    def add(self, window: np.ndarray, positions: np.ndarray, first: int) -> None:
        """Count the known values ``window[positions - first]``."""
        from deltaroll.codec import kernels

        kernels.tally_window(
            window, positions, first, self._changes.exception_ranks, self._shift, self._state
        )

    def counts(self) -> np.ndarray:
        return self._state[: EXCEPTION_CONTEXT + 1].copy()


class ChunkResolver:
    """Resolves a sparse change set a chunk of positions at a time, in order, reading each
    chunk's known values straight from a window of the tensor (one compiled loop): the other
    side's values follow at once, where :meth:`SparseChanges.resolve` needs them all first.
    Needs the per-context counts: the payload's (format 6) or a :class:`ContextTally`'s."""

    def __init__(
        self, changes: SparseChanges, *, forward: bool, counts: np.ndarray | None = None
    ) -> None:
        from deltaroll.codec import kernels

        counts = changes.context_counts if counts is None else counts
        if counts is None:
            raise ValueError("a format-4 change set needs its contexts counted first")
        self._changes = changes
        self._forward = forward
        self._state = np.zeros(kernels.STATE_SIZE, np.int64)
        ends = np.cumsum(counts)
        slots = EXCEPTION_CONTEXT + 1
        self._state[:slots] = ends - counts
        self._state[slots : 2 * slots] = ends
        self._sorted: np.ndarray | None = None

    @property
    def resolved(self) -> int:
        """How many changes were resolved so far."""
        from deltaroll.codec import kernels

        return int(self._state[kernels.STATE_RANK])

    def resolve(
        self,
        window: np.ndarray,
        positions: np.ndarray,
        first: int,
        known: np.ndarray,
        other: np.ndarray,
    ) -> None:
        """``known[i] = window[positions[i] - first]``, ``other[i]`` its other side; raises
        :class:`CodecError` when they do not fit the payload (a wrong base or corrupt delta)."""
        from deltaroll.codec import kernels

        if self._sorted is None:
            self._sorted = self._changes.sorted_changes
            if self._sorted.dtype != window.dtype:
                raise CodecError("the tensor's element width does not match the change set's")
        if self.resolved + positions.shape[0] > self._changes.count:
            raise CodecError("more positions than the change set holds")
        problem = kernels.resolve_window(
            window,
            positions,
            first,
            known,
            other,
            self._changes.exception_ranks,
            self._sorted,
            self._forward,
            np.uint64(context_shift(window.dtype.itemsize)),
            self._state,
        )
        if problem == kernels.COUNTS_DISAGREE:
            raise CodecError(
                "delta does not fit this tensor (its per-context counts disagree with the "
                "values); wrong base or corrupt delta"
            )
        _raise_problem(problem)


def _raise_problem(problem: int) -> None:
    from deltaroll.codec import kernels

    if problem == kernels.ZERO_CHANGE:
        raise CodecError("delta payload lists an element that does not change; corrupt")
    if problem == kernels.EXCEPTIONS_DISAGREE:
        raise CodecError(
            "delta does not fit this tensor (its exceptions disagree with the values); "
            "wrong base or corrupt delta"
        )


def decode_sparse(reader: PayloadReader, dtype: np.dtype) -> SparseChanges:
    """Decode (and bounds-check) the rest of a sparse payload for elements of ``dtype``."""
    header = reader.header
    changed = header.changed_elements
    gaps = _read_gaps(reader, changed)
    exception_count = reader.small_int()
    if exception_count > changed:
        raise CodecError("delta payload lists more exceptions than changed elements; corrupt")
    exception_streams = _read_gaps(reader, exception_count)
    counts = None
    if header.format_id == FORMAT_SPARSE_COUNTED:
        counts = _read_context_counts(reader, changed, exception_count)
    sorted_changes = reader.stream_later(dtype, changed)
    try:
        reader.expect_end()
        exception_ranks = gaps_to_positions(exception_streams, max(changed, 1))
    except CodecError:
        sorted_changes.cancel()
        raise
    return SparseChanges(header.total_elements, gaps, exception_ranks, sorted_changes, counts)


def apply_sparse(current: np.ndarray, reader: PayloadReader, *, forward: bool) -> None:
    """Apply in place: ``forward`` turns the base into the target, otherwise the reverse."""
    changes = decode_sparse(reader, current.dtype)
    positions = gaps_to_positions(changes.gaps, changes.total)
    values = current[positions]
    changes.resolve(values, forward=forward)
    current[positions] = values
