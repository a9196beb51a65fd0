"""Writing one tensor of the other side into a new file, a window at a time.

``apply -o`` (a fresh copy, a pull, an agent's build from an anchor) and the files an in-place
apply rebuilds write every tensor whole. When a tensor's other side is its current bytes with a
sparse change (or none), it is streamed: each window of the source is read, hashed, patched at
the changed positions that fall in it, hashed again and written, so memory stays one window plus
the change set, whatever the tensor's size; a dense change is streamed the same way (see
:mod:`.dense_change`). Both digests are checked once the tensor is written (into a staged file,
which a failure discards). Carried tensors are written whole.
"""

from __future__ import annotations

from typing import BinaryIO

import blake3
import numpy as np

from deltaroll.checkpoint.changeset import check_fits, checked_changes
from deltaroll.checkpoint.dense_change import dense_windows
from deltaroll.checkpoint.dtypes import bits_view, byte_view
from deltaroll.checkpoint.errors import CorruptDeltaError, WrongBaseError
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import Checkpoint, TensorFile, TensorRef
from deltaroll.checkpoint.scatter import CHUNK_POSITIONS
from deltaroll.checkpoint.transform import (
    OnBytes,
    Side,
    needs_from_bits,
    other,
    read_to_side_bits,
)

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
    if entry.kind in ("unchanged", "sparse", "dense") and needs_from_bits(entry, from_side):
        assert source is not None  # an anchor has only carried tensors
        ref = source.tensors[entry.name]
        if entry.kind == "dense":
            for window in dense_windows(entry, ref, objects, from_side, check_from=True):
                out.write(byte_view(window))
        else:
            _stream(entry, ref, objects, from_side, out)
        if on_bytes:
            on_bytes(ref.nbytes)
        return
    out.write(byte_view(read_to_side_bits(entry, source, objects, from_side, on_bytes)))


def _stream(
    entry: TensorEntry, ref: TensorRef, objects: PackReader, from_side: Side, out: BinaryIO
) -> None:
    # Imported here: numba and the cached kernels take ~0.4 s to load.
    from deltaroll.codec import kernels

    dtype = np.dtype(bits_view(ref.dtype))
    if entry.kind == "sparse":
        changes = checked_changes(entry, ref, objects, from_side)
        cursor, values = changes.positions(), changes.values
    else:
        check_fits(entry, ref, from_side)
        cursor, values = None, np.empty(0, dtype)
    hashers = {side: blake3.blake3() for side in ("base", "target")}
    to_side = other(from_side)
    buffer = np.empty(min(WINDOW_ELEMENTS, ref.numel), dtype)
    chunk = np.empty(min(CHUNK_POSITIONS, values.shape[0]), np.int64)
    done = 0
    with TensorFile(ref) as source:
        for start in range(0, ref.numel, WINDOW_ELEMENTS):
            window = buffer[: min(WINDOW_ELEMENTS, ref.numel - start)]
            source.read_into(start, window)
            hashers[from_side].update(byte_view(window))
            while cursor is not None and (taken := cursor.take(start + window.shape[0], chunk)):
                kernels.scatter(window, chunk[:taken], start, values[done : done + taken])
                done += taken
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
