"""The peers' delta encodings, reimplemented from their descriptions, to measure on the same pairs.

- TRL raw: int32 positions into the flattened tensor plus the new values, uncompressed.
- TRL gap_delta: uint16 gaps between positions (the first gap is the first position), widened to
  uint32 for the tensor if any gap overflows, plus the new values, uncompressed.
- slime xor: the XOR of the whole tensor, zstd level 1.

Each peer decodes too, so the benchmark checks the reimplementation before trusting its size.
"""

from __future__ import annotations

import numpy as np
import zstandard


def trl_raw(base: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positions = np.flatnonzero(base != target)
    return positions.astype(np.int32), target[positions]


def trl_raw_apply(base: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = base.copy()
    out[indices.astype(np.int64)] = values
    return out


def trl_gap_delta(base: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positions = np.flatnonzero(base != target)
    gaps = np.diff(positions, prepend=0)
    width = np.uint16 if gaps.size == 0 or int(gaps.max()) <= 0xFFFF else np.uint32
    return gaps.astype(width), target[positions]


def trl_gap_delta_apply(base: np.ndarray, gaps: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = base.copy()
    out[np.cumsum(gaps.astype(np.int64))] = values
    return out


def slime_xor(base: np.ndarray, target: np.ndarray) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(np.bitwise_xor(base, target).tobytes())


def slime_xor_apply(base: np.ndarray, frame: bytes) -> np.ndarray:
    xor = np.frombuffer(zstandard.ZstdDecompressor().decompress(frame), dtype=base.dtype)
    return np.bitwise_xor(base, xor)


def peer_sizes(base: np.ndarray, target: np.ndarray) -> dict[str, int]:
    """Bytes each peer needs for this tensor, after checking each one round-trips."""
    raw_indices, raw_values = trl_raw(base, target)
    gaps, gap_values = trl_gap_delta(base, target)
    frame = slime_xor(base, target)
    for restored in (
        trl_raw_apply(base, raw_indices, raw_values),
        trl_gap_delta_apply(base, gaps, gap_values),
        slime_xor_apply(base, frame),
    ):
        if not np.array_equal(restored, target):
            raise AssertionError("a peer reimplementation does not round-trip")
    return {
        "trl_raw": raw_indices.nbytes + raw_values.nbytes,
        "trl_gap_delta": gaps.nbytes + gap_values.nbytes,
        "slime_xor": len(frame),
    }
