"""Ascending positions as gaps: one byte per gap, with an escape for the rare long one.

Most gaps between changed elements are short, so a byte stream of gaps is what zstd's Huffman
stage compresses best; a gap of 255 or more is written as the escape byte 255 plus its full
value in a second, wide stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deltaroll.codec.errors import CodecError

ESCAPE = 255


@dataclass(frozen=True)
class GapStreams:
    short: np.ndarray  # uint8, one per position; ESCAPE where the gap is in ``long``
    long: np.ndarray  # uint64, the gaps of ESCAPE entries, in order


def positions_to_gaps(positions: np.ndarray) -> GapStreams:
    gaps = np.diff(positions, prepend=-1) - 1
    return GapStreams(
        short=np.minimum(gaps, ESCAPE).astype(np.uint8),
        long=gaps[gaps >= ESCAPE].astype(np.uint64),
    )


def gaps_to_positions(streams: GapStreams, limit: int) -> np.ndarray:
    """Inverse of :func:`positions_to_gaps`; every position must lie in ``[0, limit)``."""
    # Imported here: numba and the cached kernels take ~0.4 s to load.
    from deltaroll.codec import kernels

    positions = np.empty(streams.short.shape[0], np.int64)
    if streams.long.size and (int(streams.long.min()) < ESCAPE or int(streams.long.max()) >= limit):
        raise CodecError("delta payload has a gap outside the tensor; corrupt")
    problem = kernels.gaps_to_positions(
        np.ascontiguousarray(streams.short, np.uint8),
        np.ascontiguousarray(streams.long, np.uint64),
        np.uint8(ESCAPE),
        limit,
        positions,
    )
    if problem == kernels.LONG_GAPS_MISMATCH:
        raise CodecError("delta payload's long-gap stream does not match its escapes; corrupt")
    if problem == kernels.POSITION_OUT_OF_RANGE:
        raise CodecError("delta payload positions run past the end of the tensor; corrupt")
    return positions
