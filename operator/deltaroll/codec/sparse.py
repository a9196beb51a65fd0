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

from dataclasses import dataclass

import numpy as np

from deltaroll.codec.context import context_shift
from deltaroll.codec.errors import CodecError
from deltaroll.codec.framing import ELEMENT_DTYPES, PayloadReader
from deltaroll.codec.gaps import ESCAPE, GapStreams, gaps_to_positions

FORMAT_SPARSE = 4


def _read_gaps(reader: PayloadReader, count: int, limit: int) -> np.ndarray:
    short = reader.stream(ELEMENT_DTYPES[1], count)
    escapes = int(np.count_nonzero(short == ESCAPE))
    long = reader.stream(ELEMENT_DTYPES[8], escapes)
    return gaps_to_positions(GapStreams(short, long), limit)


@dataclass(frozen=True)
class SparseChanges:
    """A sparse payload decoded: where the changed elements are and how each changes.

    The values on the other side follow from the known side's values *at the positions only*,
    so an in-place apply can gather those few values from a file instead of reading the tensor.
    """

    positions: np.ndarray  # int64, ascending, inside the tensor
    exception_ranks: np.ndarray  # int64, ascending, below positions.size
    sorted_changes: np.ndarray  # zigzag changes grouped by context, one per position

    def values_after(self, known: np.ndarray, *, forward: bool) -> np.ndarray:
        """The other side's values at ``positions``, given the known side's values there
        (``forward``: known is the base). Raises :class:`CodecError` if they do not fit."""
        if known.shape != self.positions.shape or known.dtype != self.sorted_changes.dtype:
            raise CodecError("the known values do not match the change set's length or width")
        updated = np.array(known, copy=True)
        _apply_changes(updated, np.arange(updated.shape[0], dtype=np.int64), self, forward)
        return updated


def decode_sparse(reader: PayloadReader, dtype: np.dtype) -> SparseChanges:
    """Decode (and bounds-check) the rest of a sparse payload for elements of ``dtype``."""
    header = reader.header
    changed = header.changed_elements
    positions = _read_gaps(reader, changed, header.total_elements)
    exception_count = reader.small_int()
    if exception_count > changed:
        raise CodecError("delta payload lists more exceptions than changed elements; corrupt")
    exception_ranks = _read_gaps(reader, exception_count, max(changed, 1))
    sorted_changes = reader.stream(dtype, changed)
    reader.expect_end()
    return SparseChanges(positions, exception_ranks, sorted_changes)


def apply_sparse(current: np.ndarray, reader: PayloadReader, *, forward: bool) -> None:
    """Apply in place: ``forward`` turns the base into the target, otherwise the reverse."""
    changes = decode_sparse(reader, current.dtype)
    _apply_changes(current, changes.positions, changes, forward)


def _apply_changes(
    current: np.ndarray, positions: np.ndarray, changes: SparseChanges, forward: bool
) -> None:
    # Imported here: numba and the cached kernels take ~0.4 s to load.
    from deltaroll.codec import kernels

    problem = kernels.apply_sparse_changes(
        current,
        positions,
        changes.exception_ranks,
        changes.sorted_changes,
        forward,
        np.uint64(context_shift(current.dtype.itemsize)),
    )
    if problem == kernels.ZERO_CHANGE:
        raise CodecError("delta payload lists an element that does not change; corrupt")
    if problem == kernels.EXCEPTIONS_DISAGREE:
        raise CodecError(
            "delta does not fit this tensor (its exceptions disagree with the values); "
            "wrong base or corrupt delta"
        )
