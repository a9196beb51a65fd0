"""The diff and sparse-encode kernels of :mod:`deltaroll.codec.kernels` in plain numpy: same
arguments, same results, a few times slower.

Why: numba and the compiled kernels take ~0.5 s of CPU to load, over a second from a cold page
cache while the diff's own reads compete for the disk. A diff starts that load on a thread
(:mod:`deltaroll.codec.kernel_loading`) and computes its first windows with these meanwhile,
instead of waiting; no payload byte depends on which of the two ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deltaroll.codec.context import EXCEPTION_CONTEXT
from deltaroll.codec.planes import to_planes

# What compact_changes returns for positions that do not ascend from ``previous``.
NOT_ASCENDING = -1
_ESCAPE = 255


def count_changed(base: np.ndarray, target: np.ndarray) -> int:
    return int(np.count_nonzero(base != target))


def emit_changed(base: np.ndarray, target: np.ndarray, *outputs: np.ndarray) -> int:
    """``outputs``: positions, base values, target values, as the kernel's."""
    positions, base_values, target_values = outputs
    found = np.flatnonzero(base != target)
    if found.shape[0] > positions.shape[0]:
        return -1
    count = found.shape[0]
    positions[:count] = found
    np.take(base, found, out=base_values[:count])
    np.take(target, found, out=target_values[:count])
    return count


def compact_changes(
    positions: np.ndarray, base_values: np.ndarray, target_values: np.ndarray, *rest: Any
) -> int:
    """``rest``: the kernel's previous position, context shift, bits and its four outputs."""
    previous, context_shift, bits, short_gaps, contexts, changes, long_gaps = rest
    gaps = np.diff(positions, prepend=np.int64(previous)) - 1
    if gaps.shape[0] and int(gaps.min()) < 0:
        return NOT_ASCENDING
    long = gaps[gaps >= _ESCAPE]
    long_gaps[: long.shape[0]] = long
    short_gaps[:] = np.minimum(gaps, _ESCAPE)
    element = base_values.dtype.type
    shift, byte = element(context_shift), element(0xFF)
    base_context = (base_values >> shift) & byte
    moved = base_context != (target_values >> shift) & byte
    contexts[:] = np.where(moved, np.uint16(EXCEPTION_CONTEXT), base_context)
    signed = (target_values - base_values).view(base_values.dtype.str.replace("u", "i"))
    changes[:] = ((signed << 1) ^ (signed >> (int(bits) - 1))).view(changes.dtype)
    return int(long.shape[0])


def group_planes(contexts: np.ndarray, changes: np.ndarray, planes: np.ndarray) -> None:
    planes[:] = to_planes(changes[np.argsort(contexts, kind="stable")])
