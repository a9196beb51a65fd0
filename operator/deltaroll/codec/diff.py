"""Finding what changed: the positions of differing elements and their values on both sides.

The numpy arrays are diffed by the compiled kernels of :mod:`deltaroll.codec.kernels`, which
read each input once (by their numpy stand-ins while those load, see
:mod:`deltaroll.codec.kernel_loading`); :mod:`deltaroll.codec.torch_diff` computes the same
:class:`SparseDiff` on a GPU. Only the outputs, proportional to the number of changed elements,
are allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from deltaroll.codec.kernel_loading import diff_kernels


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
    return int(diff_kernels().count_changed(*_contiguous(base, target)))


def sparse_diff(base: np.ndarray, target: np.ndarray, changed: int | None = None) -> SparseDiff:
    """Positions where ``base`` and ``target`` (same unsigned dtype and length) differ bitwise,
    with both sides' values. ``changed``, when the caller already counted it with
    :func:`count_changed`, saves the counting pass."""
    kernels = diff_kernels()
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


class ChangeSink(Protocol):
    """Takes a tensor's change set window by window (ascending, absolute positions)."""

    def add(self, window: SparseDiff) -> None: ...


Sink = TypeVar("Sink", bound=ChangeSink)

# A window's changes are listed in a scratch sized for this share of its elements (its memory
# is 8 + 2 x width bytes per element); a window with more is counted, then listed exactly.
SCRATCH_SHARE = 8


class ChangeCollector(Generic[Sink]):
    """Counts the changes of a tensor fed window by window and hands each window's change set
    to ``sink`` as it is found, in one pass.

    Why: a tensor streamed from disk would otherwise be read twice, once to count its changes
    (to choose the form) and once to list them; and the sink keeps each window in the compact
    form it needs, so memory follows what the delta stores. Windows are fed in order, their
    changes found in one reused scratch. Once ``limit`` changes are seen the sink is dropped
    (the caller's sparse form is then not allowed) and the remaining windows are only counted.
    """

    def __init__(self, dtype: np.dtype, limit: float, sink: Sink) -> None:
        self.changed = 0
        #: Every change fed so far went here; ``None`` once there were ``limit`` or more.
        self.sink: Sink | None = sink
        self._dtype = np.dtype(dtype)
        self._limit = limit
        self._scratch: SparseDiff | None = None

    def add(self, start: int, base: np.ndarray, target: np.ndarray) -> None:
        """Add the window of elements ``[start, start + base.size)``."""
        if self.sink is None:
            self.changed += count_changed(base, target)
            return
        window = self._window_changes(*_contiguous(base, target))
        self.changed += window.positions.shape[0]
        if self.changed >= self._limit:
            self.sink = self._scratch = None
            return
        window.positions[:] += start
        self.sink.add(window)

    def _window_changes(self, base: np.ndarray, target: np.ndarray) -> SparseDiff:
        """One window's changes: views of the scratch arrays (valid until the next call) when
        they fit, else arrays of their own after a counting pass."""
        capacity = max(1, base.shape[0] // SCRATCH_SHARE)
        if self._scratch is None or self._scratch.positions.shape[0] < capacity:
            self._scratch = SparseDiff(
                np.empty(capacity, np.int64),
                np.empty(capacity, self._dtype),
                np.empty(capacity, self._dtype),
            )
        scratch = self._scratch
        found = diff_kernels().emit_changed(
            base, target, scratch.positions, scratch.base_values, scratch.target_values
        )
        if found < 0:
            return sparse_diff(base, target)
        return SparseDiff(
            scratch.positions[:found], scratch.base_values[:found], scratch.target_values[:found]
        )
