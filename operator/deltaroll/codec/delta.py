"""The codec's public entry points: encode one tensor's delta, apply it either way.

Callers pass flat arrays of unsigned integers viewing the tensors' raw bytes (uint8 for 1-byte
dtypes, uint16 for bf16/f16/i16, uint32 for f32/i32, uint64 for f64/i64); values are never
compared as floats, so NaN payloads and signed zeros survive bit for bit. The encoder also takes
torch tensors of any dtype and shape, on any device, and then diffs them where they live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from deltaroll.codec.changes import ChangesHasher
from deltaroll.codec.dense import FORMAT_DENSE_XOR, apply_dense, dense_xor_chunks, encode_dense
from deltaroll.codec.diff import ChangeCollector, SparseDiff, sparse_diff
from deltaroll.codec.errors import CodecError
from deltaroll.codec.framing import ELEMENT_DTYPES, Header, PayloadReader, PayloadWriter
from deltaroll.codec.model import EncodedTensor, TensorKind
from deltaroll.codec.sparse import FORMAT_SPARSE, SparseChanges, apply_sparse, decode_sparse
from deltaroll.codec.sparse_encoder import SparseEncoder, bytes_per_change

if TYPE_CHECKING:
    import torch

FORMAT_UNCHANGED = 1
MIN_LEVEL, MAX_LEVEL = 1, 22
# Changed fractions where each form is tried. Below a quarter the sparse form wins (about 1 byte
# per changed element where the whole XOR costs 2 or more); from a half on, the sparse form's
# memory (tens of bytes per changed element) would exceed the tensor's, and dense is as small.
DENSE_MIN_FRACTION = 0.25
SPARSE_MAX_FRACTION = 0.5

# Elements per window when a dense tensor's change set is hashed (bounds its memory).
DIGEST_WINDOW_ELEMENTS = 1 << 22

Side = Literal["base", "target"]


def _check_array(name: str, array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise CodecError(f"{name} must be a flat numpy array (reshape(-1) the tensor's view)")
    if array.dtype != ELEMENT_DTYPES.get(array.dtype.itemsize):
        raise CodecError(
            f"{name} has dtype {array.dtype}; pass a little-endian unsigned-int view of the raw "
            "bytes (uint8/uint16/uint32/uint64 by element width)"
        )


class _SparseBuild:
    """The sparse payload and the change-set digest, fed the same windows of changes."""

    def __init__(self, dtype: np.dtype, total: int) -> None:
        self.encoder = SparseEncoder(dtype, total)
        self.hasher = ChangesHasher(np.dtype(dtype).itemsize)

    def add(self, window: SparseDiff) -> None:
        self.hasher.update(window.positions, window.base_values, window.target_values)
        self.encoder.add(window)


@dataclass(frozen=True)
class _Pair:
    """What the encoder needs from a (base, target) pair, whether numpy arrays or torch tensors."""

    width: int
    total: int
    # scan(limit): the number of changed elements and, when it is below the limit (the sparse
    # form is allowed), the sparse payload and digest built from them; a windowed source finds
    # both in one read.
    scan: Callable[[float], tuple[int, _SparseBuild | None]]
    # The whole XOR in consecutive chunks of the given number of elements.
    xor_chunks: Callable[[int], Iterator[np.ndarray]]
    # The change set in windows of the given number of elements (positions are absolute).
    diff_chunks: Callable[[int], Iterator[SparseDiff]]
    # Most changed elements the sparse form may list: unbounded for tensors in memory, a
    # budget for windowed sources.
    sparse_limit: float = float("inf")


def _numpy_pair(base: np.ndarray, target: np.ndarray) -> _Pair:
    _check_array("base", base)
    _check_array("target", target)
    if base.dtype != target.dtype or base.shape != target.shape:
        raise CodecError(
            f"base ({base.dtype}, {base.shape}) and target ({target.dtype}, {target.shape}) "
            "differ in dtype or length; store the target whole instead"
        )

    def read(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        return base[start : start + count], target[start : start + count]

    pair = _windowed_pair(read, base.dtype, base.shape[0], IN_MEMORY_WINDOW_ELEMENTS)
    return replace(pair, sparse_limit=float("inf"))


def _torch_pair(base: torch.Tensor, target: torch.Tensor) -> _Pair:
    import torch

    from deltaroll.codec import torch_diff

    if not (isinstance(base, torch.Tensor) and isinstance(target, torch.Tensor)):
        raise CodecError("pass base and target both as numpy arrays or both as torch tensors")
    if base.dtype != target.dtype or base.numel() != target.numel():
        raise CodecError(
            f"base ({base.dtype}, {base.numel()} elements) and target ({target.dtype}, "
            f"{target.numel()}) differ in dtype or size; store the target whole instead"
        )
    if base.device != target.device:
        raise CodecError(f"base is on {base.device} but target on {target.device}; move one")
    base_bits, target_bits = torch_diff.raw_bits(base), torch_diff.raw_bits(target)

    def xor_chunks(chunk: int) -> Iterator[np.ndarray]:
        for start in range(0, base_bits.numel(), chunk):
            xor = torch.bitwise_xor(
                base_bits[start : start + chunk], target_bits[start : start + chunk]
            )
            yield torch_diff.to_unsigned_numpy(xor)

    def diff_chunks(chunk: int) -> Iterator[SparseDiff]:
        flat_base, flat_target = base.reshape(-1), target.reshape(-1)
        for start in range(0, base.numel(), chunk):
            part = torch_diff.sparse_diff_torch(
                flat_base[start : start + chunk], flat_target[start : start + chunk]
            )
            yield SparseDiff(part.positions + start, part.base_values, part.target_values)

    def scan(limit: float) -> tuple[int, _SparseBuild | None]:
        changed = torch_diff.count_changed_torch(base, target)
        if not 0 < changed < limit:
            return changed, None
        build = _SparseBuild(ELEMENT_DTYPES[base.element_size()], base.numel())
        build.add(torch_diff.sparse_diff_torch(base, target))
        return changed, build

    return _Pair(
        width=base.element_size(),
        total=base.numel(),
        scan=scan,
        xor_chunks=xor_chunks,
        diff_chunks=diff_chunks,
    )


# A windowed source: (first element, count) -> (base, target) bits of that range; the arrays
# may be reused by the source's next call, so they are read before it and never kept.
WindowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
# Bytes the sparse form of a windowed tensor may hold while it is built.
WINDOWED_SPARSE_BUDGET_BYTES = 256 << 20
# Elements per window when a tensor already in memory is diffed: the scratch of its changes
# and the temporaries of the dense form stay small whatever the tensor.
IN_MEMORY_WINDOW_ELEMENTS = 1 << 22


def _windowed_pair(read: WindowReader, dtype: np.dtype, total: int, window: int) -> _Pair:
    """A pair read one window at a time, so memory follows the change set, not the tensor."""
    width = np.dtype(dtype).itemsize

    def windows(chunk: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, total, chunk):
            base, target = read(start, min(chunk, total - start))
            yield start, base, target

    def scan(limit: float) -> tuple[int, _SparseBuild | None]:
        collector = ChangeCollector(dtype, limit, _SparseBuild(dtype, total))
        for start, base, target in windows(window):
            collector.add(start, base, target)
        return collector.changed, collector.sink

    def xor_chunks(chunk: int) -> Iterator[np.ndarray]:
        for _, base, target in windows(chunk):
            yield np.bitwise_xor(base, target)

    def diff_chunks(chunk: int) -> Iterator[SparseDiff]:
        for start, base, target in windows(chunk):
            part = sparse_diff(base, target)
            yield SparseDiff(part.positions + start, part.base_values, part.target_values)

    return _Pair(
        width=width,
        total=total,
        scan=scan,
        xor_chunks=xor_chunks,
        diff_chunks=diff_chunks,
        sparse_limit=WINDOWED_SPARSE_BUDGET_BYTES / bytes_per_change(width),
    )


def encode_windowed_delta(
    read: WindowReader, dtype: np.dtype, total: int, *, level: int = 3, window: int = 1 << 22
) -> EncodedTensor:
    """:func:`encode_tensor_delta` of a tensor pair read ``window`` elements at a time by
    ``read(start, count)`` (flat unsigned arrays). Reads the windows in order, from the first:
    once when the sparse form is chosen (it is limited to what fits a memory budget), again
    for the dense form."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise CodecError(f"zstd level must be between {MIN_LEVEL} and {MAX_LEVEL}, not {level}")
    return _encode(_windowed_pair(read, np.dtype(dtype), total, window), level)


def encode_tensor_delta(
    base: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, *, level: int = 3
) -> EncodedTensor:
    """The smallest of unchanged / sparse / dense that turns ``base`` into ``target``.

    A first pass counts the changed elements; the sparse form is built only when fewer than
    half changed (its memory grows with the changed elements), the dense form (streamed, with
    bounded memory) only when at least a quarter did; between the two, the smaller wins. The
    payload bytes are the same whether the diff ran on numpy arrays or on torch tensors.
    """
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise CodecError(f"zstd level must be between {MIN_LEVEL} and {MAX_LEVEL}, not {level}")
    pair = (
        _numpy_pair(base, target)  # type: ignore[arg-type]
        if isinstance(base, np.ndarray)
        else _torch_pair(base, target)  # type: ignore[arg-type]
    )
    return _encode(pair, level)


def _encode(pair: _Pair, level: int) -> EncodedTensor:
    changed, build = pair.scan(min(SPARSE_MAX_FRACTION * pair.total, pair.sparse_limit))
    if changed == 0:
        header = Header(FORMAT_UNCHANGED, pair.width, pair.total, 0)
        return EncodedTensor(TensorKind.UNCHANGED, PayloadWriter(header).finish(), 0, pair.total)
    candidates = []
    sparse_allowed = build is not None
    if build is not None:
        candidates.append((TensorKind.SPARSE, build.encoder.payload(level)))
        digest = build.hasher.hexdigest()
        del build
    else:
        hasher = ChangesHasher(pair.width)
        for part in pair.diff_chunks(DIGEST_WINDOW_ELEMENTS):
            hasher.update(part.positions, part.base_values, part.target_values)
        digest = hasher.hexdigest()
    if changed >= DENSE_MIN_FRACTION * pair.total or not sparse_allowed:
        dense = encode_dense(pair.xor_chunks, pair.width, pair.total, changed, level)
        candidates.append((TensorKind.DENSE, dense))
    kind, payload = min(candidates, key=lambda candidate: len(candidate[1]))
    return EncodedTensor(kind, payload, changed, pair.total, digest)


def decode_changes(encoded: EncodedTensor, dtype: np.dtype) -> SparseChanges:
    """A sparse delta's change set, for an apply that gathers only the changed elements.

    Checks the payload like :func:`apply_tensor_delta` does; ``dtype`` is the tensor's unsigned
    element type. Raises :class:`CodecError` for anything but a well-formed sparse payload.
    """
    reader = _checked_reader(encoded, np.dtype(dtype).itemsize, encoded.total_elements)
    if reader.header.format_id != FORMAT_SPARSE:
        raise CodecError(f"a {encoded.kind.value} delta has no sparse change set")
    return decode_sparse(reader, np.dtype(dtype))


def decode_dense(encoded: EncodedTensor, dtype: np.dtype) -> Iterator[tuple[int, np.ndarray]]:
    """A dense delta's XOR as (start, chunk) in order, for an apply that patches a tensor a
    window at a time instead of holding it whole. Checks the payload like
    :func:`apply_tensor_delta`; raises :class:`CodecError` (at the latest once the last chunk
    was taken) for anything but a well-formed dense payload of this tensor."""
    reader = _checked_reader(encoded, np.dtype(dtype).itemsize, encoded.total_elements)
    if reader.header.format_id != FORMAT_DENSE_XOR:
        raise CodecError(f"a {encoded.kind.value} delta has no dense change")
    return dense_xor_chunks(reader, np.dtype(dtype))


def _checked_reader(encoded: EncodedTensor, width: int, total: int) -> PayloadReader:
    """A reader of ``encoded``'s payload whose header fits a tensor of ``total`` x ``width``."""
    reader = PayloadReader(encoded.payload)
    header = reader.header
    if header.width != width or header.total_elements != total:
        raise CodecError(
            f"delta is for {header.total_elements} elements of {header.width} bytes, but the "
            f"tensor has {total} of {width}; wrong tensor or base"
        )
    if (
        header.changed_elements != encoded.changed_elements
        or header.total_elements != encoded.total_elements
    ):
        raise CodecError("delta payload disagrees with its recorded element counts; corrupt")
    expected_kind = _KIND_OF_FORMAT.get(header.format_id)
    if expected_kind is None:
        raise CodecError(
            f"delta payload has format {header.format_id}, unknown to this Deltaroll; upgrade "
            "Deltaroll or recompute the delta"
        )
    if expected_kind is not encoded.kind:
        raise CodecError(
            f"delta payload is {expected_kind.value} but recorded as {encoded.kind.value}; corrupt"
        )
    return reader


def apply_tensor_delta(current: np.ndarray, encoded: EncodedTensor, *, side: Side) -> None:
    """Apply the delta to ``current`` in place.

    ``side="base"``: ``current`` is the base and becomes the target; ``side="target"``: the
    reverse (rollback), with the same payload. Raises :class:`CodecError` if the payload is
    malformed or does not fit; ``current`` is then left as it was.
    """
    if side not in ("base", "target"):
        raise CodecError(f"side must be 'base' or 'target', not {side!r}")
    _check_array("current", current)
    if not current.flags.writeable:
        raise CodecError("current is read-only; pass a writable array (e.g. a copy)")
    reader = _checked_reader(encoded, current.dtype.itemsize, current.shape[0])
    header = reader.header
    if header.format_id == FORMAT_UNCHANGED:
        if header.changed_elements:
            raise CodecError("an unchanged delta claims changed elements; corrupt")
        reader.expect_end()
    elif header.format_id == FORMAT_DENSE_XOR:
        apply_dense(current, reader)
    else:
        apply_sparse(current, reader, forward=side == "base")


_KIND_OF_FORMAT = {
    FORMAT_UNCHANGED: TensorKind.UNCHANGED,
    FORMAT_DENSE_XOR: TensorKind.DENSE,
    FORMAT_SPARSE: TensorKind.SPARSE,
}
