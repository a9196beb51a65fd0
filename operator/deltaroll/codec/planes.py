"""Byte planes: split multi-byte values into one stream per byte position.

The high bytes of XOR values (sign, exponent) are mostly zero while the low bytes are noisy; zstd
compresses each plane far better than the interleaved values.
"""

from __future__ import annotations

import numpy as np


def to_planes(values: np.ndarray) -> np.ndarray:
    """uint8 array: all lowest bytes first, then the next byte of every value, and so on."""
    width = values.dtype.itemsize
    little = values.astype(values.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little.view(np.uint8).reshape(-1, width).T).reshape(-1)


def from_planes(planes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`to_planes` (``planes.size`` must be a multiple of the width).

    Built by shifting each plane into place, which reads every plane once in order (a strided
    transpose copy is about 2.5x slower, and an apply decodes these on its pause path)."""
    width = dtype.itemsize
    rows = planes.reshape(width, -1)
    values = rows[0].astype(dtype)
    for index in range(1, width):
        values |= rows[index].astype(dtype) << np.array(8 * index, dtype=dtype)
    return values
