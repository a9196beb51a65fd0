"""Whole data carried in a delta: split into fixed-size chunks of raw bytes, each zstd-compressed.

Used for tensors that appear, disappear or change shape or dtype, and for auxiliary files. Fixed
chunk boundaries of the *raw* bytes (not of the compressed stream) make identical chunks produce
identical objects, so they deduplicate across anchors and deltas.
"""

from __future__ import annotations

import numpy as np
import zstandard

from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.objects import ObjectDir

CHUNK_BYTES = 64 << 20


def put_chunks(
    objects: ObjectDir, data: np.ndarray | bytes | memoryview, *, level: int
) -> list[str]:
    """Store ``data`` as compressed chunks; returns their digests in order."""
    view = byte_view(data)
    compressor = zstandard.ZstdCompressor(level=level)
    return [
        objects.put(compressor.compress(view[start : start + CHUNK_BYTES]))
        for start in range(0, len(view), CHUNK_BYTES)
    ]


def get_chunks(objects: ObjectDir, digests: list[str], nbytes: int) -> bytearray:
    """Reassemble ``nbytes`` of data from its chunks, checking every chunk and the total size."""
    out = bytearray(nbytes)
    position = 0
    decompressor = zstandard.ZstdDecompressor()
    for digest in digests:
        try:
            chunk = decompressor.decompress(objects.get(digest), max_output_size=CHUNK_BYTES)
        except zstandard.ZstdError as exc:
            raise CorruptDeltaError(f"object {digest} is not a valid zstd chunk: {exc}") from exc
        if position + len(chunk) > nbytes:
            raise CorruptDeltaError(f"object {digest} holds more bytes than its manifest entry")
        out[position : position + len(chunk)] = chunk
        position += len(chunk)
    if position != nbytes:
        raise CorruptDeltaError(f"chunks {digests[:1]}... hold {position} bytes, expected {nbytes}")
    return out
