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

    Compiled, no temporaries (numpy's casts, shifts and ors took three times as long and two
    full-size temporaries, and an apply decodes these on its pause path)."""
    # Imported here: numba and the cached kernels take ~0.4 s to load.
    from deltaroll.codec import kernels

    values = np.empty(planes.shape[0] // dtype.itemsize, dtype)
    kernels.interleave_planes(np.ascontiguousarray(planes, np.uint8), values)
    return values
