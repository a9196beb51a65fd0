"""Payload bytes are a stored format: the same inputs must always encode to the same bytes.

Deltas already published name their payload objects by sha256, and a diff split across workers
must produce the bytes one worker would; so a faster diff (or any other refactor) may not change
a single payload byte. The inputs are built from integer hashing only (no RNG, no float maths),
so they are the same on every machine and numpy version; the digests were recorded from the
codec as first released, before its diff was rewritten.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deltaroll.codec import apply_tensor_delta, encode_tensor_delta

_MASK64 = (1 << 64) - 1


def _hashes(n: int, salt: int) -> np.ndarray:
    """splitmix64 of 0..n-1 (salted): well-mixed, platform-independent uint64s."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & _MASK64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _pair(dtype: type, n: int, percent_changed: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """A base of weight-like bit patterns and a target where ``percent_changed`` % of elements
    moved by a few units in the last place (some across an exponent, some by wrapping)."""
    bits = np.dtype(dtype).itemsize * 8
    h = _hashes(n, salt)
    base = (h >> np.uint64(64 - bits)).astype(dtype)
    chosen = (h % np.uint64(100)) < np.uint64(percent_changed)
    step = ((h >> np.uint64(8)) % np.uint64(7)).astype(np.int64) - 3  # -3..3
    step[step == 0] = 1
    with np.errstate(over="ignore"):
        target = np.where(chosen, base + step.astype(dtype), base).astype(dtype)
    return base, target


def _edge_pair() -> tuple[np.ndarray, np.ndarray]:
    """Changes at the first and last element, on both sides of a 2**18 boundary, and gaps of
    254, 255, 256 and over 65 535 elements."""
    n = (1 << 18) + 7
    base, _ = _pair(np.uint16, n, 0, 5)
    target = base.copy()
    for position in (0, 254 + 1, 255 + 256 + 1, 512 + 256 + 1, 100_000, (1 << 18) - 1, 1 << 18):
        target[position] ^= np.uint16(0x0101)
    target[-1] ^= np.uint16(0x8000)
    return base, target


CASES = {
    "bf16_6pct": (lambda: _pair(np.uint16, 200_003, 6, 1), 3),
    "bf16_6pct_level1": (lambda: _pair(np.uint16, 200_003, 6, 1), 1),
    "u8_3pct": (lambda: _pair(np.uint8, 70_001, 3, 2), 3),
    "u32_90pct_dense": (lambda: _pair(np.uint32, 50_000, 90, 3), 3),
    "u64_35pct": (lambda: _pair(np.uint64, 20_000, 35, 4), 3),  # sparse and dense both built
    "u16_unchanged": (lambda: _pair(np.uint16, 1_000, 0, 6), 3),
    "u16_edges": (_edge_pair, 3),
}

PINNED = {
    "bf16_6pct": "sparse:8df626c33a855ab1d2d7a26ae85f0766d2a23fc6f5fc6730eb3e387225f0717c",
    "bf16_6pct_level1": "sparse:02821530aa9297aa9f928ec986ff6a42c26bc1cf5ea4cf98bf3c17d20e1aecb7",
    "u8_3pct": "sparse:78b052baf5e44abc0f617455c757a614ebf7c751f8cd59142748a8ec4751ee11",
    "u32_90pct_dense": "dense:9e70e2edfe9c4a45f4bee6e1cfc140ffc980bd72117517fa3e81590bcbe9f0a0",
    "u64_35pct": "sparse:ed48b23ce3d3ddd9906005ca5ba782f343910a0dd26dcfde2f3ed269bf4ada35",
    "u16_unchanged": "unchanged:fc1cd7986c3eba2a0b17f4670b1be2ccd534aa7500f606409d718fd726591882",
    "u16_edges": "sparse:1188b3cf4b2874fb57f7127007cadf50ef55b81dc758a83555837cbae170e2dc",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_payload_bytes_are_pinned(case: str) -> None:
    make, level = CASES[case]
    base, target = make()
    encoded = encode_tensor_delta(base, target, level=level)
    digest = hashlib.sha256(encoded.payload).hexdigest()
    assert encoded.changed_elements == int(np.count_nonzero(base != target))
    assert f"{encoded.kind.value}:{digest}" == PINNED[case]
    restored = base.copy()
    apply_tensor_delta(restored, encoded, side="base")
    assert restored.tobytes() == target.tobytes()
