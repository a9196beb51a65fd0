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
    """Inverse of :func:`to_planes` (``planes.size`` must be a multiple of the width)."""
    width = dtype.itemsize
    interleaved = np.ascontiguousarray(planes.reshape(width, -1).T)
    return interleaved.view(dtype.newbyteorder("<")).reshape(-1).astype(dtype, copy=False)
