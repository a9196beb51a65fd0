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

This module decodes; :mod:`deltaroll.codec.sparse_encoder` builds the payload.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from deltaroll.codec.context import context_shift
from deltaroll.codec.errors import CodecError
from deltaroll.codec.framing import ELEMENT_DTYPES, PayloadReader
from deltaroll.codec.gaps import (
    ESCAPE,
    GapStreams,
    PositionCursor,
    gaps_to_positions,
)

FORMAT_SPARSE = 4


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
    sorted_changes = reader.stream_later(dtype, changed)
    try:
        reader.expect_end()
        exception_ranks = gaps_to_positions(exception_streams, max(changed, 1))
    except CodecError:
        sorted_changes.cancel()
        raise
    return SparseChanges(header.total_elements, gaps, exception_ranks, sorted_changes)


def apply_sparse(current: np.ndarray, reader: PayloadReader, *, forward: bool) -> None:
    """Apply in place: ``forward`` turns the base into the target, otherwise the reverse."""
    changes = decode_sparse(reader, current.dtype)
    positions = gaps_to_positions(changes.gaps, changes.total)
    values = current[positions]
    changes.resolve(values, forward=forward)
    current[positions] = values
