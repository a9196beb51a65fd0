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


class PositionCursor:
    """Decodes gap streams into ascending positions a window at a time (resumable), so a caller
    holds one window of int64 positions rather than a whole tensor's (8 bytes per change)."""

    def __init__(self, streams: GapStreams, limit: int) -> None:
        if streams.long.size and (
            int(streams.long.min()) < ESCAPE or int(streams.long.max()) >= limit
        ):
            raise CodecError("delta payload has a gap outside the tensor; corrupt")
        self._short = np.ascontiguousarray(streams.short, np.uint8)
        self._long = np.ascontiguousarray(streams.long, np.uint64)
        self._limit = limit
        self._state = np.array([0, 0, -1], np.int64)  # next short gap, next long gap, position

    @property
    def taken(self) -> int:
        """How many positions were decoded so far."""
        return int(self._state[0])

    @property
    def remaining(self) -> int:
        """How many positions are left to decode."""
        return self._short.shape[0] - self.taken

    def take(self, end: int, out: np.ndarray) -> int:
        """Decode the next positions below ``end`` into ``out`` (int64, at most its size)."""
        # Imported here: numba and the cached kernels take ~0.4 s to load.
        from deltaroll.codec import kernels

        count = kernels.next_positions(
            self._short, self._long, np.uint8(ESCAPE), self._limit, self._state, end, out
        )
        if count == -kernels.LONG_GAPS_MISMATCH:
            raise CodecError("delta payload's long-gap stream does not match its escapes; corrupt")
        if count == -kernels.POSITION_OUT_OF_RANGE:
            raise CodecError("delta payload positions run past the end of the tensor; corrupt")
        return int(count)


def gaps_to_positions(streams: GapStreams, limit: int) -> np.ndarray:
    """Inverse of :func:`positions_to_gaps`; every position must lie in ``[0, limit)``."""
    positions = np.empty(streams.short.shape[0], np.int64)
    PositionCursor(streams, limit).take(limit, positions)
    return positions
