"""A bad payload or a tensor that does not fit raises CodecError, never a wrong result."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deltaroll.codec import (
    CodecError,
    EncodedTensor,
    TensorKind,
    apply_tensor_delta,
    encode_tensor_delta,
)
from deltaroll.errors import DeltarollError


def sample_deltas() -> list[tuple[np.ndarray, EncodedTensor]]:
    """One delta of every kind, with the base it applies to."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 1 << 16, 4000, dtype=np.uint16)
    sparse_target = base.copy()
    sparse_target[rng.choice(4000, 60, replace=False)] ^= np.uint16(1)
    dense_target = base ^ rng.integers(1, 1 << 16, 4000, dtype=np.uint16)
    deltas = [
        (base, encode_tensor_delta(base, base)),
        (base, encode_tensor_delta(base, sparse_target)),
        (base, encode_tensor_delta(base, dense_target)),
    ]
    assert [encoded.kind for _, encoded in deltas] == [
        TensorKind.UNCHANGED,
        TensorKind.SPARSE,
        TensorKind.DENSE,
    ]
    return deltas


def apply_must_fail(
    base: np.ndarray, encoded: EncodedTensor, side: str = "base", match: str | None = None
) -> None:
    current = base.copy()
    with pytest.raises(CodecError, match=match):
        apply_tensor_delta(current, encoded, side=side)  # type: ignore[arg-type]
    assert current.tobytes() == base.tobytes()  # a refused delta changes nothing


def test_codec_error_is_a_deltaroll_error() -> None:
    assert issubclass(CodecError, DeltarollError)


@pytest.mark.parametrize("index", range(3))
def test_every_truncation_is_refused(index: int) -> None:
    base, encoded = sample_deltas()[index]
    for length in range(len(encoded.payload)):
        apply_must_fail(base, dataclasses.replace(encoded, payload=encoded.payload[:length]))


@pytest.mark.parametrize("index", range(3))
def test_every_flipped_byte_is_refused(index: int) -> None:
    base, encoded = sample_deltas()[index]
    payload = bytearray(encoded.payload)
    for position in range(len(payload)):
        altered = bytearray(payload)
        altered[position] ^= 0x40
        apply_must_fail(base, dataclasses.replace(encoded, payload=bytes(altered)))


def test_appended_bytes_are_refused() -> None:
    base, encoded = sample_deltas()[1]
    apply_must_fail(base, dataclasses.replace(encoded, payload=encoded.payload + b"\0"))


def test_wrong_length_or_width_is_refused() -> None:
    base, encoded = sample_deltas()[1]
    apply_must_fail(base[:-1], encoded)
    apply_must_fail(base.view(np.uint8), encoded)
    apply_must_fail(base.astype(np.uint32), encoded)


def test_recorded_kind_or_counts_must_match_the_payload() -> None:
    base, encoded = sample_deltas()[1]
    apply_must_fail(base, dataclasses.replace(encoded, kind=TensorKind.DENSE))
    apply_must_fail(base, dataclasses.replace(encoded, changed_elements=1))
    apply_must_fail(base, dataclasses.replace(encoded, total_elements=1))


def test_bad_arguments_are_refused() -> None:
    base, encoded = sample_deltas()[1]
    apply_must_fail(base, encoded, side="sideways")
    apply_must_fail(base.astype(np.int16), encoded)
    read_only = base.copy()
    read_only.flags.writeable = False
    with pytest.raises(CodecError):
        apply_tensor_delta(read_only, encoded, side="base")
    with pytest.raises(CodecError):
        encode_tensor_delta(base, base[:-1])
    with pytest.raises(CodecError):
        encode_tensor_delta(base.reshape(2, -1), base.reshape(2, -1))
    with pytest.raises(CodecError):
        encode_tensor_delta(base.astype(np.float32), base.astype(np.float32))
    big_endian = base.astype(">u2")
    with pytest.raises(CodecError):
        encode_tensor_delta(big_endian, big_endian)
    for level in (0, 23):
        with pytest.raises(CodecError):
            encode_tensor_delta(base, base, level=level)


def test_a_failed_apply_leaves_the_tensor_untouched() -> None:
    base, encoded = sample_deltas()[1]
    current = base.copy()
    with pytest.raises(CodecError):
        apply_tensor_delta(
            current, dataclasses.replace(encoded, payload=encoded.payload[:-3]), side="base"
        )
    assert current.tobytes() == base.tobytes()


# Payloads with a valid checksum but impossible content: what a buggy or hostile encoder could
# write. Each must still be refused by the decoder's own checks.


def _sparse_payload(
    total: int,
    changed: int,
    short: list[int],
    long: list[int],
    exception_count: int,
    exception_short: list[int],
    changes: list[int],
    trailing: tuple[int, ...] = (),
) -> EncodedTensor:
    from deltaroll.codec.framing import Header, PayloadWriter
    from deltaroll.codec.sparse import FORMAT_SPARSE

    writer = PayloadWriter(Header(FORMAT_SPARSE, 2, total, changed))
    writer.stream(np.array(short, np.uint8), 3)
    writer.stream(np.array(long, np.uint64), 3)
    writer.small_int(exception_count)
    writer.stream(np.array(exception_short, np.uint8), 3)
    writer.stream(np.empty(0, np.uint64), 3)
    writer.stream(np.array(changes, np.uint16), 3)
    for value in trailing:
        writer.small_int(value)
    return EncodedTensor(TensorKind.SPARSE, writer.finish(), changed, total)


def test_a_well_formed_handmade_payload_applies() -> None:
    """The control for the cases below: the same construction, with sane content, works.

    bf16 1.0 is 0x3F80; +1 at position 3, -1 at position 3 + 1 + 280 = 284. The -1 step crosses
    into the next lower exponent, so the second change (rank 1) is listed as an exception.
    """
    base = np.full(300, 0x3F80, dtype=np.uint16)
    apply_tensor_delta(base, _sparse_payload(300, 2, *SANE), side="base")
    assert np.flatnonzero(base != 0x3F80).tolist() == [3, 284]
    assert base[3] == 0x3F81 and base[284] == 0x3F7F


SANE = ([3, 255], [280], 1, [1], [2, 1])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (([3, 255], [400], 1, [1], [2, 1]), "gap outside"),  # a long gap runs past the end
        (([3, 255], [], 1, [1], [2, 1]), "corrupt"),  # an escape without its long gap
        (([3, 255], [280], 3, [0, 0, 0], [2, 1]), "more exceptions"),
        (([3, 255], [280], 1, [5], [2, 1]), "past the end"),  # an exception past the last change
        (([3, 255], [280], 1, [1], [0, 1]), "does not change"),  # a change of zero
        # the zero change is reported even where the exceptions disagree too
        (([3, 255], [280], 0, [], [0, 1]), "does not change"),
        (([3, 255], [280], 2, [0, 0], [2, 1]), "disagree"),  # an exception that does not move
        (([3, 255], [280], 0, [], [2, 1]), "disagree"),  # a context that moves, not listed
        # the changes (decompressed in the background) hold three values for two positions
        (([3, 255], [280], 1, [1], [2, 1, 1]), "expected 4; corrupt"),
    ],
)
def test_impossible_content_is_refused(case, message: str) -> None:
    base = np.full(300, 0x3F80, dtype=np.uint16)
    apply_must_fail(base, _sparse_payload(300, 2, *case), match=message)
    apply_must_fail(base, _sparse_payload(300, 2, *case), side="target", match=message)


def test_trailing_data_after_the_changes_is_refused() -> None:
    """Found after the changes were sent to be decompressed in the background: still a
    CodecError, and the tensor untouched."""
    encoded = _sparse_payload(300, 2, *SANE, trailing=(7,))  # one byte too many
    apply_must_fail(np.full(300, 0x3F80, dtype=np.uint16), encoded, match="trailing")


def test_unknown_format_is_refused() -> None:
    from deltaroll.codec.framing import Header, PayloadWriter

    payload = PayloadWriter(Header(99, 2, 10, 0)).finish()
    apply_must_fail(np.zeros(10, np.uint16), EncodedTensor(TensorKind.UNCHANGED, payload, 0, 10))


def test_a_dense_delta_failing_late_undoes_the_chunks_it_applied(monkeypatch) -> None:
    """The changed-element count is only known after the last chunk; by then earlier chunks are
    applied, and must be restored."""
    import deltaroll.codec.dense as dense
    from deltaroll.codec.framing import PayloadReader

    monkeypatch.setattr(dense, "CHUNK_ELEMENTS", 1000)
    rng = np.random.default_rng(4)
    base = rng.integers(0, 1 << 16, 3500, dtype=np.uint16)
    xor = rng.integers(1, 1 << 16, 3500, dtype=np.uint16)

    def chunks(size: int):
        return (xor[start : start + size] for start in range(0, xor.size, size))

    lying = dense.encode_dense(chunks, 2, 3500, 3499, 3)  # claims one change fewer
    assert PayloadReader(lying).header.changed_elements == 3499
    current = base.copy()
    with pytest.raises(CodecError):
        apply_tensor_delta(current, EncodedTensor(TensorKind.DENSE, lying, 3499, 3500), side="base")
    assert current.tobytes() == base.tobytes()


def test_payload_integers_round_trip_up_to_64_bits() -> None:
    from deltaroll.codec.framing import Header, PayloadReader, PayloadWriter

    values = [0, 1, 127, 128, 300, 2**32, 2**63 - 1, 2**64 - 1]
    writer = PayloadWriter(Header(1, 8, 2**40, 2**39))
    for value in values:
        writer.small_int(value)
    reader = PayloadReader(writer.finish())
    assert reader.header == Header(1, 8, 2**40, 2**39)
    assert [reader.small_int() for _ in values] == values
    reader.expect_end()
    with pytest.raises(CodecError):
        reader.small_int()
