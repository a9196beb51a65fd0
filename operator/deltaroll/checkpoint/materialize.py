"""Writing one tensor of the other side into a new file, a window at a time.

``apply -o`` (a fresh copy, a pull, an agent's build from an anchor) and the files an in-place
apply rebuilds write every tensor whole. When a tensor's other side is its current bytes with a
sparse change (or none), it is streamed: each window of the source is read, hashed, patched at
the changed positions that fall in it, hashed again and written, so memory stays one window plus
the change set, whatever the tensor's size. Both digests are checked once the tensor is
written (into a staged file, which a failure discards). Dense and carried tensors are written
whole, as before.
"""

from __future__ import annotations

from typing import BinaryIO

import blake3
import numpy as np

from deltaroll.checkpoint.dtypes import bits_view, byte_view
from deltaroll.checkpoint.errors import ChangesMismatchError, CorruptDeltaError, WrongBaseError
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import Checkpoint, TensorFile, TensorRef
from deltaroll.checkpoint.scatter import TensorSpan, gather
from deltaroll.checkpoint.transform import (
    OnBytes,
    Side,
    encoded_tensor,
    needs_from_bits,
    other,
    read_to_side_bits,
)
from deltaroll.codec import ChangesHasher, CodecError, decode_changes

WINDOW_ELEMENTS = 1 << 22


def write_to_side(
    entry: TensorEntry,
    source: Checkpoint | None,
    objects: PackReader,
    from_side: Side,
    out: BinaryIO,
    on_bytes: OnBytes | None,
) -> None:
    """Write ``entry``'s bytes on the other side of ``from_side`` to ``out``."""
    if entry.kind in ("unchanged", "sparse") and needs_from_bits(entry, from_side):
        assert source is not None  # an anchor has only carried tensors
        _stream(entry, source.tensors[entry.name], objects, from_side, out)
        if on_bytes:
            on_bytes(source.tensors[entry.name].nbytes)
        return
    out.write(byte_view(read_to_side_bits(entry, source, objects, from_side, on_bytes)))


def _stream(
    entry: TensorEntry, ref: TensorRef, objects: PackReader, from_side: Side, out: BinaryIO
) -> None:
    dtype = np.dtype(bits_view(ref.dtype))
    positions, values = changed_values(entry, ref, objects, from_side)
    hashers = {side: blake3.blake3() for side in ("base", "target")}
    to_side = other(from_side)
    buffer = np.empty(min(WINDOW_ELEMENTS, ref.numel), dtype)
    with TensorFile(ref) as source:
        for start in range(0, ref.numel, WINDOW_ELEMENTS):
            window = buffer[: min(WINDOW_ELEMENTS, ref.numel - start)]
            source.read_into(start, window)
            hashers[from_side].update(byte_view(window))
            if positions.size:
                first, stop = np.searchsorted(positions, [start, start + window.shape[0]])
                window[positions[first:stop] - start] = values[first:stop]
            hashers[to_side].update(byte_view(window))
            out.write(byte_view(window))
    expected_from, expected_to = entry.side(from_side), entry.side(to_side)
    assert expected_from is not None and expected_to is not None  # same-shape entries
    if hashers[from_side].hexdigest() != expected_from.digest or dtype.itemsize * ref.numel != (
        expected_from.nbytes
    ):
        raise WrongBaseError(
            f"tensor {entry.name!r} differs from the delta's {from_side}: this checkpoint is not "
            f"the version the delta applies to"
        )
    if hashers[to_side].hexdigest() != expected_to.digest:
        raise CorruptDeltaError(
            f"tensor {entry.name!r} does not match its {to_side} digest after applying its "
            "payload: the delta is corrupt; fetch or recompute it"
        )


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


def changed_values(
    entry: TensorEntry, ref: TensorRef, objects: PackReader, from_side: Side
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, new values) of a sparse change, computed from the values at the changed
    positions only and checked against the tensor's change digest (nothing is written)."""
    dtype = np.dtype(bits_view(ref.dtype))
    check_fits(entry, ref, from_side)
    if entry.kind != "sparse":
        return np.empty(0, np.int64), np.empty(0, dtype)
    try:
        changes = decode_changes(encoded_tensor(entry, objects), dtype)
        known = gather(TensorSpan(ref.path, ref.begin, ref.numel, dtype), changes.positions)
        computed = changes.values_after(known, forward=from_side == "base")
    except CodecError as exc:
        raise CorruptDeltaError(
            f"the payload of tensor {entry.name!r} does not apply: {exc}; fetch or recompute "
            "the delta"
        ) from exc
    base, target = (known, computed) if from_side == "base" else (computed, known)
    hasher = ChangesHasher(dtype.itemsize)
    hasher.update(changes.positions, base, target)
    if hasher.hexdigest() != entry.changes_digest:
        raise ChangesMismatchError(
            f"tensor {entry.name!r} in {ref.path}: the values at its {changes.positions.size} "
            f"changed positions are not the ones the delta was made from; the checkpoint is not "
            f"the {from_side} it was recorded as (or the delta is corrupt): run `deltaroll "
            f"verify` on it, then restore it; nothing was changed"
        )
    return changes.positions, computed
