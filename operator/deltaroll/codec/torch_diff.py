"""The diff on torch tensors, on whatever device they live (a GPU in a delta Job).

Produces exactly the :class:`~deltaroll.codec.diff.SparseDiff` the numpy path does, so the payload
bytes do not depend on where the diff ran; only the (small) changed elements cross to the host.
"""

from __future__ import annotations

import numpy as np
import torch

from deltaroll.codec.diff import SparseDiff
from deltaroll.codec.errors import CodecError

# Signed integer dtypes of each width: torch's unsigned types lack bitwise kernels on some
# devices, and the bits are the same.
_SIGNED = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
# Elements per chunk: bounds the device memory of the XOR and the index temporaries.
CHUNK_ELEMENTS = 1 << 26


def raw_bits(tensor: torch.Tensor) -> torch.Tensor:
    """The flat signed-int view of a tensor's bytes (any dtype, incl. bool, fp8, bf16)."""
    width = tensor.element_size()
    if width not in _SIGNED:
        raise CodecError(f"tensors of {width}-byte elements are not supported")
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.view(_SIGNED[width])


def to_unsigned_numpy(bits: torch.Tensor) -> np.ndarray:
    return bits.cpu().numpy().view(_UNSIGNED[bits.element_size()])


def sparse_diff_torch(base: torch.Tensor, target: torch.Tensor) -> SparseDiff:
    """Like :func:`deltaroll.codec.diff.sparse_diff`, computed on the tensors' device."""
    base_bits, target_bits = raw_bits(base), raw_bits(target)
    positions: list[torch.Tensor] = []
    base_values: list[torch.Tensor] = []
    target_values: list[torch.Tensor] = []
    for start in range(0, base_bits.numel(), CHUNK_ELEMENTS):
        base_chunk = base_bits[start : start + CHUNK_ELEMENTS]
        target_chunk = target_bits[start : start + CHUNK_ELEMENTS]
        local = torch.nonzero(base_chunk != target_chunk).squeeze(1)
        positions.append(local + start)
        base_values.append(base_chunk[local])
        target_values.append(target_chunk[local])
    if not positions:
        empty = to_unsigned_numpy(base_bits[:0])
        return SparseDiff(np.empty(0, np.int64), empty, empty)
    return SparseDiff(
        torch.cat(positions).cpu().numpy().astype(np.int64, copy=False),
        to_unsigned_numpy(torch.cat(base_values)),
        to_unsigned_numpy(torch.cat(target_values)),
    )


def count_changed_torch(base: torch.Tensor, target: torch.Tensor) -> int:
    base_bits, target_bits = raw_bits(base), raw_bits(target)
    return sum(
        int(
            (
                base_bits[start : start + CHUNK_ELEMENTS]
                != target_bits[start : start + CHUNK_ELEMENTS]
            ).sum()
        )
        for start in range(0, base_bits.numel(), CHUNK_ELEMENTS)
    )
