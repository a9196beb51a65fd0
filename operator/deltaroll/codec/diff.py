"""Finding what changed: the positions of differing elements and their values on both sides.

The numpy arrays are diffed by the compiled kernels of :mod:`deltaroll.codec.kernels`, which
read each input once; :mod:`deltaroll.codec.torch_diff` computes the same :class:`SparseDiff` on
a GPU. Only the outputs, proportional to the number of changed elements, are allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseDiff:
    """Changed positions (ascending, int64) and the base's and target's values there."""

    positions: np.ndarray
    base_values: np.ndarray
    target_values: np.ndarray


def _contiguous(base: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The kernels are compiled for contiguous arrays; a strided view is copied (rare: callers
    # pass flat views of whole tensors).
    return np.ascontiguousarray(base), np.ascontiguousarray(target)


def count_changed(base: np.ndarray, target: np.ndarray) -> int:
    """How many elements differ bitwise: a cheap first pass (no positions) that lets the encoder
    pick a form before it spends memory on one."""
    # Imported here: numba and the cached kernels take ~0.4 s to load, paid only by a process
    # that diffs.
    from deltaroll.codec import kernels

    return int(kernels.count_changed(*_contiguous(base, target)))


def sparse_diff(base: np.ndarray, target: np.ndarray, changed: int | None = None) -> SparseDiff:
    """Positions where ``base`` and ``target`` (same unsigned dtype and length) differ bitwise,
    with both sides' values. ``changed``, when the caller already counted it with
    :func:`count_changed`, saves the counting pass."""
    from deltaroll.codec import kernels

    base, target = _contiguous(base, target)
    if changed is None:
        changed = int(kernels.count_changed(base, target))
    positions = np.empty(changed, np.int64)
    base_values = np.empty(changed, base.dtype)
    target_values = np.empty(changed, base.dtype)
    found = kernels.emit_changed(base, target, positions, base_values, target_values)
    if found != changed:
        raise ValueError(
            f"{changed} changed elements were expected but {found} found (-1: more); "
            "the arrays were modified during the diff, or the count was of other arrays"
        )
    return SparseDiff(positions, base_values, target_values)
