"""Resolving a sparse change set a chunk of positions at a time, straight from the tensor.

What the in-place apply uses: it must give exactly what the whole-set :meth:`resolve` gives,
however the positions are cut, in both directions, from format 6's stored per-context counts or
from a format-4 payload's counted ones; and a payload whose counts are wrong, or a tensor that is
not the known side, must raise rather than write anything out of bounds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from deltaroll.codec import CodecError, decode_changes, encode_tensor_delta
from deltaroll.codec.framing import Header, PayloadReader, PayloadWriter
from deltaroll.codec.gaps import gaps_to_positions
from deltaroll.codec.model import EncodedTensor
from deltaroll.codec.sparse import ChunkResolver, ContextTally
from fixtures.payloads import format_4_of

from .test_payload_pins import CASES


def _resolve_in_chunks(
    encoded: EncodedTensor, known: np.ndarray, *, forward: bool, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    changes = decode_changes(encoded, known.dtype)
    positions = gaps_to_positions(changes.gaps, changes.total)
    counts = None
    if changes.context_counts is None:
        tally = ContextTally(changes, known.dtype)
        for start in range(0, positions.size, chunk):
            tally.add(known, positions[start : start + chunk], 0)
        counts = tally.counts()
    resolver = ChunkResolver(changes, forward=forward, counts=counts)
    gathered = np.empty(positions.size, known.dtype)
    other = np.empty(positions.size, known.dtype)
    for start in range(0, positions.size, chunk):
        end = start + chunk
        # A window that starts at the chunk's first position, as a mapped window would.
        first = int(positions[start]) if start < positions.size else 0
        resolver.resolve(
            known[first:], positions[start:end], first, gathered[start:end], other[start:end]
        )
    assert resolver.resolved == positions.size
    return gathered, other


@pytest.mark.parametrize("old_format", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
@pytest.mark.parametrize("case", ["bf16_6pct", "u8_3pct", "u64_35pct", "u16_edges"])
def test_chunks_resolve_like_the_whole_set(case: str, chunk: int, old_format: bool) -> None:
    make, level = CASES[case]
    base, target = make()
    encoded = encode_tensor_delta(base, target, level=level)
    if old_format:
        encoded = format_4_of(encoded)
    changed = np.flatnonzero(base != target)
    gathered, resolved = _resolve_in_chunks(encoded, base, forward=True, chunk=chunk)
    assert gathered.tobytes() == base[changed].tobytes()
    assert resolved.tobytes() == target[changed].tobytes()
    gathered, resolved = _resolve_in_chunks(encoded, target, forward=False, chunk=chunk)
    assert resolved.tobytes() == base[changed].tobytes()


def test_a_wrong_known_side_is_refused() -> None:
    make, level = CASES["bf16_6pct"]
    base, target = make()
    encoded = encode_tensor_delta(base, target, level=level)
    wrong = base.copy()
    changed = np.flatnonzero(base != target)
    wrong[changed[::3]] ^= np.uint16(0x4000)  # other exponents: other contexts
    with pytest.raises(CodecError, match="wrong base or corrupt"):
        _resolve_in_chunks(encoded, wrong, forward=True, chunk=1000)


def _rewrite_counts(
    encoded: EncodedTensor, edit: Callable[[list[list[int]]], None]
) -> EncodedTensor:
    """The payload with its per-context (gap, count) pairs passed through ``edit``."""
    reader = PayloadReader(encoded.payload)
    h = reader.header
    writer = PayloadWriter(Header(h.format_id, h.width, h.total_elements, h.changed_elements))
    for _ in range(2):
        writer.section(bytes(reader.section()))
    writer.small_int(reader.small_int())
    for _ in range(2):
        writer.section(bytes(reader.section()))
    held = reader.small_int()
    pairs = [[reader.small_int(), reader.small_int()] for _ in range(held)]
    edit(pairs)
    writer.small_int(held)
    for gap, count in pairs:
        writer.small_int(gap)
        writer.small_int(count)
    writer.section(bytes(reader.section()))
    return EncodedTensor(
        encoded.kind,
        writer.finish(),
        encoded.changed_elements,
        encoded.total_elements,
        encoded.changes_digest,
    )


def _moved(shift: int) -> Callable[[list[list[int]]], None]:
    """Move ``shift`` changes from the first context's count to the next's."""

    def edit(pairs: list[list[int]]) -> None:
        pairs[0][1] -= shift
        pairs[1][1] += shift

    return edit


def _each_plus_one(pairs: list[list[int]]) -> None:
    for pair in pairs:
        pair[1] += 1


def test_wrong_counts_are_refused_not_overrun() -> None:
    make, level = CASES["bf16_6pct"]
    base, target = make()
    encoded = encode_tensor_delta(base, target, level=level)
    _resolve_in_chunks(
        _rewrite_counts(encoded, _moved(0)), base, forward=True, chunk=100
    )  # rebuilt: fine
    with pytest.raises(CodecError, match="per-context counts"):
        _resolve_in_chunks(_rewrite_counts(encoded, _moved(1)), base, forward=True, chunk=100)


def test_counts_that_do_not_add_up_are_corrupt() -> None:
    make, level = CASES["bf16_6pct"]
    base, target = make()
    bad = _rewrite_counts(encode_tensor_delta(base, target, level=level), _each_plus_one)
    with pytest.raises(CodecError, match="do not add up"):
        decode_changes(bad, np.dtype(np.uint16))
