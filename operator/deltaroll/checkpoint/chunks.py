"""Whole data carried in a delta: split into fixed-size chunks of raw bytes, each zstd-compressed.

Used for tensors that appear, disappear or change shape or dtype, and for auxiliary files. Fixed
chunk boundaries of the *raw* bytes (not of the compressed stream) make identical chunks produce
identical blobs, stored once in a delta (see :mod:`.packs`); chunks keep every decompression
bounded by a known size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zstandard

from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest_tensors import BlobRef
from deltaroll.checkpoint.packs import PackReader, PackWriter

CHUNK_BYTES = 64 << 20
#: The most one zstd block can yield (RFC 8878: Block_Maximum_Size).
ZSTD_BLOCK_BYTES = 128 << 10
#: The fewest bytes of a frame's magic number and header, and of one block (its 3-byte header
#: and the one byte an RLE block repeats): what bounds how far a frame can expand.
_FRAME_MIN_BYTES, _BLOCK_MIN_BYTES = 6, 4


def frame_capacity(length: int, *, frames: int = 1) -> int:
    """The most bytes ``frames`` zstd frames of ``length`` bytes in all can decompress to."""
    return max(0, length - frames * _FRAME_MIN_BYTES) // _BLOCK_MIN_BYTES * ZSTD_BLOCK_BYTES


def put_chunks(
    packs: PackWriter, data: np.ndarray | bytes | memoryview, *, level: int
) -> list[BlobRef]:
    """Store ``data`` as compressed chunks; returns where they lie, in order.

    A frame already stored is listed again only while all its listings stay within what the
    frame can hold (:func:`frame_capacity`), the bound an apply checks: beyond that (64 MiB
    chunks of zeros) it is stored again, which costs its ~2 KB."""
    view = byte_view(data)
    compressor = zstandard.ZstdCompressor(level=level)
    blobs = []
    for start in range(0, len(view), CHUNK_BYTES):
        raw = view[start : start + CHUNK_BYTES]
        frame = compressor.compress(raw)
        blobs.append(packs.add(frame, expands_to=len(raw), holds=frame_capacity(len(frame))))
    return blobs


def get_chunks(packs: PackReader, blobs: Sequence[BlobRef], nbytes: int) -> bytearray:
    """Reassemble ``nbytes`` of data from its chunks, checking every chunk and the total size.

    ``nbytes`` comes from a manifest: it is checked against what the chunks can hold (each at
    most :data:`CHUNK_BYTES`) before anything that size is allocated."""
    if nbytes > len(blobs) * CHUNK_BYTES or len(blobs) > nbytes // CHUNK_BYTES + 1:
        raise CorruptDeltaError(
            f"{len(blobs)} chunk(s) cannot hold {nbytes} bytes; the manifest is corrupt"
        )
    out = bytearray(nbytes)
    position = 0
    decompressor = zstandard.ZstdDecompressor()
    for blob in blobs:
        try:
            chunk = decompressor.decompress(packs.read(blob), max_output_size=CHUNK_BYTES)
        except zstandard.ZstdError as exc:
            raise CorruptDeltaError(f"blob {list(blob)} is not a valid zstd chunk: {exc}") from exc
        if position + len(chunk) > nbytes:
            raise CorruptDeltaError(f"blob {list(blob)} holds more bytes than its manifest entry")
        out[position : position + len(chunk)] = chunk
        position += len(chunk)
    if position != nbytes:
        raise CorruptDeltaError(f"chunks {list(blobs[:1])}... hold {position}, expected {nbytes}")
    return out
