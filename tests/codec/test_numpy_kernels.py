"""The numpy stand-ins a diff uses while numba loads must give the compiled kernels' results.

A diff switches from one to the other mid-tensor (whenever the background load finishes), so
any difference would make the payload bytes depend on timing.
"""

from __future__ import annotations

import hashlib
import sys
import threading

import numpy as np
import pytest

from deltaroll.codec import (
    encode_tensor_delta,
    kernel_loading,
    kernels,
    numpy_kernels,
    sparse_encoder,
)
from deltaroll.codec.context import context_shift
from deltaroll.codec.diff import SparseDiff, sparse_diff
from deltaroll.codec.sparse_encoder import SparseEncoder

from .test_payload_pins import CASES, PINNED
from .test_windowed import _ReusingReader

UNSIGNED = [np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.fixture
def loading(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Pretend a background load is under way; set the returned event to finish it."""
    started, finished = threading.Event(), threading.Event()
    started.set()
    monkeypatch.setattr(kernel_loading, "_started", started)
    monkeypatch.setattr(kernel_loading, "_finished", finished)
    return finished


def _changes(dtype: type, n: int, seed: int) -> SparseDiff:
    """Changes with short, escaped and long gaps, steps across the context bits and wraps."""
    rng = np.random.default_rng(seed)
    bits = 8 * np.dtype(dtype).itemsize
    base = rng.integers(0, 1 << bits, n, dtype=np.uint64).astype(dtype)
    step = rng.choice(np.array([1, 2, 3, -1, -2, 1 << (bits - 2), 255], dtype=np.int64), n)
    target = (base.astype(np.uint64) + step.astype(np.uint64)).astype(dtype)
    target[target == base] ^= dtype(1)
    positions = np.cumsum(rng.choice(np.array([1, 2, 255, 256, 70_000]), n)).astype(np.int64)
    return SparseDiff(positions, base, target)


def _compact(module: object, changes: SparseDiff, previous: int) -> tuple[object, ...]:
    n, dtype = changes.positions.size, changes.base_values.dtype
    outputs = (np.empty(n, np.uint8), np.empty(n, np.uint16), np.empty(n, dtype))
    long_gaps = np.zeros(n, np.uint64)
    written = module.compact_changes(  # type: ignore[attr-defined]
        changes.positions,
        changes.base_values,
        changes.target_values,
        previous,
        np.uint64(context_shift(dtype.itemsize)),
        np.uint64(8 * dtype.itemsize),
        *outputs,
        long_gaps,
    )
    return (written, *(o.tolist() for o in outputs), long_gaps[: max(written, 0)].tolist())


@pytest.mark.parametrize("dtype", UNSIGNED)
def test_compact_and_group_match_the_compiled_kernels(dtype: type) -> None:
    changes = _changes(dtype, 5000, seed=np.dtype(dtype).itemsize)
    for previous in (-1, 0):
        assert _compact(numpy_kernels, changes, previous) == _compact(kernels, changes, previous)
    contexts = np.random.default_rng(1).integers(0, 257, 5000).astype(np.uint16)
    planes = [np.empty(5000 * np.dtype(dtype).itemsize, np.uint8) for _ in range(2)]
    numpy_kernels.group_planes(contexts, changes.base_values, planes[0])
    kernels.group_planes(contexts, changes.base_values, planes[1])
    np.testing.assert_array_equal(planes[0], planes[1])


@pytest.mark.parametrize("dtype", UNSIGNED)
def test_positions_that_do_not_ascend_are_refused(dtype: type) -> None:
    changes = _changes(dtype, 100, seed=3)
    for module in (numpy_kernels, kernels):
        assert _compact(module, changes, int(changes.positions[0]))[0] == kernels.NOT_ASCENDING
    encoder = SparseEncoder(np.dtype(dtype), int(changes.positions[-1]) + 1)
    encoder.add(changes)
    with pytest.raises(ValueError, match="ascending"):
        encoder.add(changes)


def test_a_change_past_the_tensor_is_refused() -> None:
    changes = _changes(np.uint16, 10, seed=4)
    with pytest.raises(ValueError, match="past the tensor"):
        SparseEncoder(np.dtype(np.uint16), int(changes.positions[-1])).add(changes)


def test_numpy_count_and_emit_match(loading: threading.Event) -> None:
    changes = _changes(np.uint32, 3000, seed=5)
    base = np.zeros(int(changes.positions[-1]) + 1, np.uint32)
    target = base.copy()
    target[changes.positions] = changes.target_values | np.uint32(1)
    listed = sparse_diff(base, target)
    np.testing.assert_array_equal(listed.positions, changes.positions)
    np.testing.assert_array_equal(listed.target_values, target[changes.positions])
    with pytest.raises(ValueError, match="expected"):
        sparse_diff(base, target, changes.positions.size - 1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_payloads_are_the_pinned_bytes_while_loading(case: str, loading: threading.Event) -> None:
    make, level = CASES[case]
    encoded = encode_tensor_delta(*make(), level=level)
    assert f"{encoded.kind.value}:{hashlib.sha256(encoded.payload).hexdigest()}" == PINNED[case]


def test_the_load_finishing_mid_tensor_changes_no_byte(loading: threading.Event) -> None:
    from deltaroll.codec.delta import encode_windowed_delta

    make, level = CASES["u16_edges"]
    base, target = make()
    expected = encode_tensor_delta(base, target, level=level)
    reader = _ReusingReader(base, target)

    def read(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        if start >= base.size // 2:
            loading.set()
        return reader(start, count)

    encoded = encode_windowed_delta(read, base.dtype, base.size, level=level, window=4099)
    assert loading.is_set()
    assert encoded == expected


def test_a_started_load_ends_with_the_compiled_kernels() -> None:
    kernel_loading.start_loading_kernels()
    assert kernel_loading._finished.wait(60)
    assert kernel_loading.diff_kernels() is kernels


class _FinishedOnceAwaited(threading.Event):
    """A load that finishes as soon as someone waits for it."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return super().wait(timeout)


def test_a_large_change_set_waits_for_the_compiled_grouping(
    loading: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy's grouping holds an int64 order per change: above the limit, wait for the kernel."""

    def refuse(*args: object) -> None:
        raise AssertionError("grouped a large change set with numpy")

    finished = _FinishedOnceAwaited()
    monkeypatch.setattr(kernel_loading, "_finished", finished)
    monkeypatch.setattr(numpy_kernels, "group_planes", refuse)
    monkeypatch.setattr(sparse_encoder, "NUMPY_GROUPING_MAX_CHANGES", 10)
    make, level = CASES["bf16_6pct"]
    encoded = encode_tensor_delta(*make(), level=level)
    assert finished.is_set()
    assert f"sparse:{hashlib.sha256(encoded.payload).hexdigest()}" == PINNED["bf16_6pct"]


def test_small_work_runs_on_the_stand_ins_unless_the_kernels_are_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernel_loading, "_started", threading.Event())
    monkeypatch.setattr(kernel_loading, "_finished", threading.Event())
    with kernel_loading.stand_ins_unless_loaded():
        assert kernel_loading.diff_kernels() is kernels  # already imported: no load to spare
        monkeypatch.delitem(sys.modules, "deltaroll.codec.kernels")
        assert kernel_loading.diff_kernels() is numpy_kernels


def test_the_load_starts_only_once_a_tensors_changes_outgrow_numpys_grouping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A diff on the stand-ins loads numba only for a tensor whose changes numpy cannot group
    within its memory budget: as the changes pass the limit, not before, not for a small one."""
    starts: list[int] = []
    encoder = sparse_encoder.SparseEncoder(np.dtype(np.uint16), 1 << 30)
    monkeypatch.setattr(sparse_encoder, "start_loading_kernels", lambda: starts.append(1))
    monkeypatch.setattr(sparse_encoder, "NUMPY_GROUPING_MAX_CHANGES", 1000)
    changes = _changes(np.uint16, 600, seed=5)
    encoder.add(changes)
    assert starts == []
    shifted = SparseDiff(
        changes.positions + int(changes.positions[-1]) + 1,
        changes.base_values,
        changes.target_values,
    )
    encoder.add(shifted)
    assert starts == [1]
