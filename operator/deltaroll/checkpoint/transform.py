"""Turning one tensor from one side of a delta into the other, with every digest checked.

``from_side`` is the side the caller holds ("base" for a forward apply, "target" for a reverse
one); the codec's XOR payloads work both ways, and carried tensors keep whole data for each side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from deltaroll.checkpoint.chunks import get_chunks
from deltaroll.checkpoint.digests import tensor_digest
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import CorruptDeltaError, WrongBaseError
from deltaroll.checkpoint.manifest import AuxFile
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import Checkpoint
from deltaroll.codec import CodecError, EncodedTensor, TensorKind, apply_tensor_delta

Side = Literal["base", "target"]
# Progress callback: called with the number of tensor bytes just processed.
OnBytes = Callable[[int], None]


def other(side: Side) -> Side:
    return "target" if side == "base" else "base"


def check_from_bits(entry: TensorEntry, bits: np.ndarray, from_side: Side) -> None:
    """Refuse bits that are not this tensor as the delta expects it on ``from_side``."""
    expected = entry.side(from_side)
    if expected is None or tensor_digest(bits) != expected.digest:
        raise WrongBaseError(
            f"tensor {entry.name!r} differs from the delta's {from_side}: this checkpoint is not "
            f"the version the delta applies to"
        )


def needs_from_bits(entry: TensorEntry, from_side: Side) -> bool:
    """Whether the to-side of ``entry`` is computed from the caller's tensor."""
    return entry.kind != "carried" and entry.side(from_side) is not None


def to_side_bits(
    entry: TensorEntry, from_bits: np.ndarray | None, objects: PackReader, from_side: Side
) -> np.ndarray:
    """The tensor's bits on the other side; ``from_bits`` is patched in place when given."""
    to_side = other(from_side)
    expected = entry.side(to_side)
    if expected is None:
        raise ValueError(f"tensor {entry.name!r} does not exist on the {to_side} side")
    if entry.kind == "carried":
        data = get_chunks(objects, entry.chunks(to_side), expected.nbytes)
        bits = np.frombuffer(data, dtype=bits_view(expected.dtype))
    else:
        if from_bits is None:
            raise ValueError(f"tensor {entry.name!r} needs its {from_side} bits")
        bits = from_bits
        if entry.payload is not None:
            encoded = encoded_tensor(entry, objects)
            try:
                apply_tensor_delta(bits, encoded, side=from_side)
            except CodecError as exc:
                where = _where(entry, objects)
                raise CorruptDeltaError(
                    f"the payload of tensor {entry.name!r} ({where}) is corrupt: {exc}"
                ) from exc
    if tensor_digest(bits) != expected.digest:
        raise CorruptDeltaError(
            f"tensor {entry.name!r} does not match its {to_side} digest after applying "
            f"{_where(entry, objects)}: the delta is corrupt; fetch or recompute it"
        )
    return bits


def encoded_tensor(entry: TensorEntry, objects: PackReader) -> EncodedTensor:
    """The codec's view of a sparse or dense entry: its payload object and element counts."""
    assert entry.payload is not None  # only sparse and dense entries have a payload
    return EncodedTensor(
        kind=TensorKind(entry.kind),
        payload=objects.read(entry.payload),
        changed_elements=entry.changed_elements,
        total_elements=entry.total_elements,
    )


def read_to_side_bits(
    entry: TensorEntry,
    source: Checkpoint | None,
    objects: PackReader,
    from_side: Side,
    on_bytes: OnBytes | None,
) -> np.ndarray:
    """The tensor's bits on the other side, reading (and checking) ``source``'s tensor first when
    the result is computed from it; ``source`` may be None only when every tensor is carried."""
    from_bits = None
    if needs_from_bits(entry, from_side):
        assert source is not None  # an anchor has only carried tensors
        from_bits = source.read_bits(entry.name)
        check_from_bits(entry, from_bits, from_side)
    bits = to_side_bits(entry, from_bits, objects, from_side)
    if on_bytes:
        on_bytes(bits.nbytes)
    return bits


def aux_file_bytes(aux: AuxFile, objects: PackReader) -> bytearray:
    """The content of an auxiliary file recorded in a layout, checked against its digest."""
    data = get_chunks(objects, aux.chunks, aux.size)
    if tensor_digest(data) != aux.digest:
        raise CorruptDeltaError(f"auxiliary file {aux.name} does not match its digest")
    return data


def _where(entry: TensorEntry, objects: PackReader) -> str:
    """The objects a tensor's data comes from, for error messages (a person re-fetches those)."""
    digests = sorted({objects.digest(blob.object) for blob in entry.blobs()})
    return "object(s) " + ", ".join(digests) if digests else "no stored data"
