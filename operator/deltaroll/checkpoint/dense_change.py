"""A dense tensor's other side, computed a window at a time from its file and the payload.

A dense change rewrites almost every element, so its time follows the tensor anyway; its memory
must not. Each window of the current bytes is read, XORed with the payload's chunk for it,
hashed and handed on (to the redo log of an in-place apply, or to the file ``apply -o``
writes), so only a window is held, never the tensor. The digests are checked once the last
window was handed on, so the caller must not let a window reach the checkpoint before the
generator has ended without an error.
"""

from __future__ import annotations

from collections.abc import Iterator

import blake3
import numpy as np

from deltaroll.checkpoint.changeset import check_fits
from deltaroll.checkpoint.dtypes import bits_view, byte_view
from deltaroll.checkpoint.errors import CorruptDeltaError, WrongBaseError
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import TensorFile, TensorRef
from deltaroll.checkpoint.transform import Side, encoded_tensor, other
from deltaroll.codec import CodecError, decode_dense


def dense_windows(
    entry: TensorEntry,
    ref: TensorRef,
    objects: PackReader,
    from_side: Side,
    *,
    check_from: bool,
) -> Iterator[np.ndarray]:
    """The tensor's bytes on the other side, window by window; raises, after the last window
    at the latest, unless they match the other side's digest (and, with ``check_from``, the
    current bytes match this side's: a trusted-state record already vouches for them)."""
    check_fits(entry, ref, from_side)
    dtype = np.dtype(bits_view(ref.dtype))
    to_side = other(from_side)
    hashers = {side: blake3.blake3(max_threads=blake3.blake3.AUTO) for side in (from_side, to_side)}
    try:
        chunks = decode_dense(encoded_tensor(entry, objects), dtype)
        with TensorFile(ref) as source:
            for start, xor in chunks:
                window = np.empty(xor.shape[0], dtype)
                source.read_into(start, window)
                if check_from:
                    hashers[from_side].update(byte_view(window))
                window ^= xor
                hashers[to_side].update(byte_view(window))
                yield window
    except CodecError as exc:
        raise CorruptDeltaError(
            f"the payload of tensor {entry.name!r} does not apply: {exc}; fetch or recompute the "
            "delta"
        ) from exc
    expected_from, expected_to = entry.side(from_side), entry.side(to_side)
    assert expected_from is not None and expected_to is not None  # checked by check_fits
    if check_from and hashers[from_side].hexdigest() != expected_from.digest:
        raise WrongBaseError(
            f"tensor {entry.name!r} differs from the delta's {from_side}: this checkpoint is not "
            "the version the delta applies to"
        )
    if hashers[to_side].hexdigest() != expected_to.digest:
        raise CorruptDeltaError(
            f"tensor {entry.name!r} does not match its {to_side} digest after applying its "
            "payload: the delta is corrupt; fetch or recompute it"
        )
