"""Finding what changed: the positions of differing elements and their values on both sides.

The numpy path works in cache-sized chunks, so no full-size temporary (XOR, mask) is ever
allocated; only the outputs, proportional to the number of changed elements, grow with the
tensor. :mod:`deltaroll.codec.torch_diff` computes the same :class:`SparseDiff` on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Elements per chunk: the XOR buffer and the mask of 256 Ki elements stay in L2.
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class SparseDiff:
    """Changed positions (ascending, int64) and the base's and target's values there."""

    positions: np.ndarray
    base_values: np.ndarray
    target_values: np.ndarray


def sparse_diff(base: np.ndarray, target: np.ndarray) -> SparseDiff:
    """Positions where ``base`` and ``target`` differ bitwise, with both sides' values."""
    n = base.shape[0]
    xor_buffer = np.empty(min(n, CHUNK_ELEMENTS), dtype=base.dtype)
    mask_buffer = np.empty(min(n, CHUNK_ELEMENTS), dtype=np.bool_)
    positions: list[np.ndarray] = []
    base_values: list[np.ndarray] = []
    xor_values: list[np.ndarray] = []
    for start in range(0, n, CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, n)
        xor = xor_buffer[: stop - start]
        mask = mask_buffer[: stop - start]
        np.bitwise_xor(base[start:stop], target[start:stop], out=xor)
        np.not_equal(xor, 0, out=mask)
        local = np.flatnonzero(mask)
        if local.size:
            positions.append(local + start)
            base_values.append(base[start:stop][local])
            xor_values.append(xor[local])
    if not positions:
        empty = np.empty(0, base.dtype)
        return SparseDiff(np.empty(0, np.int64), empty, empty)
    base_changed = np.concatenate(base_values)
    return SparseDiff(
        np.concatenate(positions), base_changed, base_changed ^ np.concatenate(xor_values)
    )


def count_changed(base: np.ndarray, target: np.ndarray) -> int:
    """How many elements differ bitwise: a cheap first pass (no positions) that lets the encoder
    pick a form before it spends memory on one."""
    n = base.shape[0]
    mask_buffer = np.empty(min(n, CHUNK_ELEMENTS), dtype=np.bool_)
    changed = 0
    for start in range(0, n, CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, n)
        mask = mask_buffer[: stop - start]
        np.not_equal(base[start:stop], target[start:stop], out=mask)
        changed += int(np.count_nonzero(mask))
    return changed
