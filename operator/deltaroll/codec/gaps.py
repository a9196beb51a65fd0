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
    short = streams.short
    if short.size == 0:
        return np.empty(0, np.int64)
    escaped = short == ESCAPE
    if int(np.count_nonzero(escaped)) != streams.long.size:
        raise CodecError("delta payload's long-gap stream does not match its escapes; corrupt")
    if streams.long.size and (int(streams.long.min()) < ESCAPE or int(streams.long.max()) >= limit):
        raise CodecError("delta payload has a gap outside the tensor; corrupt")
    gaps = short.astype(np.int64)
    gaps[escaped] = streams.long.astype(np.int64)
    # With every gap below ``limit`` the running sum stays below size * limit; only when that
    # could exceed 2**63 is a wrap-around possible, and then monotonicity is checked directly.
    positions = np.cumsum(gaps + 1, dtype=np.int64) - 1
    wrap_possible = short.size * limit >= 1 << 63
    if int(positions[-1]) >= limit or (wrap_possible and not np.all(np.diff(positions) > 0)):
        raise CodecError("delta payload positions run past the end of the tensor; corrupt")
    return positions
