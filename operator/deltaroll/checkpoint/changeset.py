"""A sparse tensor's change set, computed from the values at its changed positions and checked
against its ``changes_digest`` before anything is written.

Shared by the in-place apply (which logs and scatters the new values) and ``apply -o`` (which
patches them into each window it copies). Memory follows the changes, a few bytes per changed
element (the payload, its gap stream and byte planes, one value), never the tensor; positions
are decoded a chunk at a time and hashed while they are at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import ChangesMismatchError, CorruptDeltaError, WrongBaseError
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import TensorRef
from deltaroll.checkpoint.scatter import TensorSpan, gather
from deltaroll.checkpoint.transform import Side, encoded_tensor, other
from deltaroll.codec import ChangesHasher, CodecError, SparseChanges, decode_changes
from deltaroll.codec.gaps import GapStreams, PositionCursor


@dataclass(frozen=True)
class CheckedChanges:
    """A checked sparse change: where (the payload's gap streams) and the new values there."""

    gaps: GapStreams
    total: int  # elements of the tensor
    values: np.ndarray  # the to-side's values, one per changed position, ascending

    @property
    def nbytes(self) -> int:
        return self.gaps.short.nbytes + self.gaps.long.nbytes + self.values.nbytes

    def positions(self) -> PositionCursor:
        return PositionCursor(self.gaps, self.total)


def check_fits(entry: TensorEntry, ref: TensorRef, from_side: Side) -> None:
    """Refuse an entry that does not describe the tensor on disk (dtype, shape, element count)
    before any count from the manifest sizes a buffer."""
    side = entry.side(from_side)
    if (
        side is None
        or (side.dtype, tuple(side.shape)) != (ref.dtype, tuple(ref.shape))
        or entry.total_elements != ref.numel
    ):
        raise WrongBaseError(
            f"tensor {entry.name!r} is {ref.dtype}{list(ref.shape)} in {ref.path}, not what the "
            f"delta's {from_side} says; nothing was changed"
        )


def span_of(ref: TensorRef) -> TensorSpan:
    return TensorSpan(ref.path, ref.begin, ref.numel, np.dtype(bits_view(ref.dtype)))


def sparse_changes(entry: TensorEntry, dtype: np.dtype, objects: PackReader) -> SparseChanges:
    """The decoded payload of a sparse entry (its positions are checked as they are read)."""
    try:
        return decode_changes(encoded_tensor(entry, objects), dtype)
    except CodecError as exc:
        raise _corrupt(entry, exc) from exc


def checked_changes(
    entry: TensorEntry, ref: TensorRef, objects: PackReader, from_side: Side
) -> CheckedChanges:
    """Gather the current values at a sparse entry's changed positions, compute the new ones,
    and refuse unless positions, old and new values hash to the entry's ``changes_digest``."""
    check_fits(entry, ref, from_side)
    span = span_of(ref)
    changes = sparse_changes(entry, span.dtype, objects)
    hasher = ChangesHasher(span.dtype.itemsize)
    values = np.empty(changes.count, span.dtype)
    try:
        gather(span, changes.positions(), values, hasher.update_positions)
        hasher.update_values(from_side, values)
        changes.resolve(values, forward=from_side == "base")
    except CodecError as exc:
        raise _corrupt(entry, exc) from exc
    hasher.update_values(other(from_side), values)
    if hasher.hexdigest() != entry.changes_digest:
        raise ChangesMismatchError(
            f"tensor {entry.name!r} in {ref.path}: the values at its {changes.count} changed "
            f"positions are not the ones the delta was made from; the checkpoint is not the "
            f"{from_side} it was recorded as (or the delta is corrupt): run `deltaroll verify` "
            f"on it, then restore it; nothing was changed"
        )
    return CheckedChanges(changes.gaps, changes.total, values)


def _corrupt(entry: TensorEntry, exc: CodecError) -> CorruptDeltaError:
    return CorruptDeltaError(
        f"the payload of tensor {entry.name!r} does not apply: {exc}; fetch or recompute the delta"
    )
