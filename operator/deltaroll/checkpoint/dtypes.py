"""Bit widths of safetensors dtypes.

Deltaroll never interprets tensor values: it compares and XORs raw bit patterns, so all it needs
to know about a dtype is how many bytes one element takes and which unsigned integer type views
those bytes (little-endian, as safetensors stores them).
"""

from __future__ import annotations

import numpy as np

from deltaroll.checkpoint.errors import UnsupportedDtypeError

# safetensors dtype name -> bytes per element
ITEMSIZE: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

_BITS_VIEW: dict[int, np.dtype[np.unsignedinteger]] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u2"),
    4: np.dtype("<u4"),
    8: np.dtype("<u8"),
}


def itemsize(dtype: str) -> int:
    """Bytes per element of a safetensors dtype; refuses dtypes whose width is unknown."""
    try:
        return ITEMSIZE[dtype]
    except KeyError:
        raise UnsupportedDtypeError(
            f"unsupported safetensors dtype {dtype!r}; supported: {', '.join(sorted(ITEMSIZE))}"
        ) from None


def byte_view(data: np.ndarray | bytes | bytearray | memoryview) -> memoryview:
    """The raw bytes of a tensor's bits (or of a bytes-like object), without copying."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).data.cast("B")
    return memoryview(data).cast("B")


def bits_view(dtype: str) -> np.dtype[np.unsignedinteger]:
    """The unsigned integer numpy dtype that views one element's raw bits."""
    return _BITS_VIEW[itemsize(dtype)]
