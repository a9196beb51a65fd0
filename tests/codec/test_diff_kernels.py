"""The compiled diff finds exactly what plain numpy finds, for every element width and length."""

from __future__ import annotations

import numpy as np
import pytest

from deltaroll.codec.diff import count_changed, sparse_diff
from deltaroll.codec.kernels import BLOCK

UNSIGNED = [np.uint8, np.uint16, np.uint32, np.uint64]
# Around the 64-element blocks the kernel packs into masks: empty, tails only, exact blocks,
# blocks plus a tail.
LENGTHS = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 17, 10_007]


def _reference(base: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    positions = np.flatnonzero(base != target)
    return positions, base[positions], target[positions]


def _assert_matches_reference(base: np.ndarray, target: np.ndarray) -> None:
    positions, base_values, target_values = _reference(base, target)
    assert count_changed(base, target) == positions.size
    for changed in (None, positions.size):
        diff = sparse_diff(base, target, changed)
        assert diff.positions.dtype == np.int64
        assert diff.base_values.dtype == diff.target_values.dtype == base.dtype
        np.testing.assert_array_equal(diff.positions, positions)
        np.testing.assert_array_equal(diff.base_values, base_values)
        np.testing.assert_array_equal(diff.target_values, target_values)


def _random_pair(dtype: type, n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    base = rng.integers(0, info.max, n, dtype=dtype, endpoint=True)
    chosen = rng.random(n) < fraction
    # XOR with a non-zero value: every chosen element really changes, in any of its bits.
    flips = rng.integers(1, info.max, n, dtype=dtype, endpoint=True)
    return base, np.where(chosen, base ^ flips, base)


@pytest.mark.parametrize("dtype", UNSIGNED)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 1.0])
def test_matches_numpy(dtype: type, n: int, fraction: float) -> None:
    base, target = _random_pair(dtype, n, fraction, seed=n)
    _assert_matches_reference(base, target)


@pytest.mark.parametrize("dtype", UNSIGNED)
def test_changes_at_every_block_edge_and_in_the_top_bit(dtype: type) -> None:
    n = 5 * BLOCK + 3
    base = np.zeros(n, dtype)
    target = base.copy()
    top_bit = dtype(1) << dtype(8 * np.dtype(dtype).itemsize - 1)
    edges = [0, BLOCK - 1, BLOCK, 2 * BLOCK - 1, 4 * BLOCK, 5 * BLOCK - 1, 5 * BLOCK, n - 1]
    target[edges] = top_bit  # the sign bit of a float: must not be lost in any mask arithmetic
    _assert_matches_reference(base, target)
    assert sparse_diff(base, target).positions.tolist() == edges


def test_strided_views_are_diffed_too() -> None:
    base, target = _random_pair(np.uint16, 2 * 1000, 0.1, seed=7)
    _assert_matches_reference(base[::2], target[::2])


def test_a_count_that_does_not_fit_the_arrays_is_refused() -> None:
    """The kernel writes into arrays sized by the count: too small must never write past them."""
    base, target = _random_pair(np.uint32, 1000, 0.2, seed=8)
    changed = count_changed(base, target)
    with pytest.raises(ValueError, match="expected"):
        sparse_diff(base, target, changed - 1)
    with pytest.raises(ValueError, match="expected"):
        sparse_diff(base, target, changed + 1)


def test_kernels_work_where_no_cache_can_be_written() -> None:
    """A read-only root filesystem leaves numba no cache location: compile in memory instead.
    A function with no source file on disk meets the same refusal from numba."""
    import numba

    from deltaroll.codec.kernels import _compiled

    namespace: dict[str, object] = {}
    exec("def double(x):\n    return 2 * x\n", namespace)  # noqa: S102 - no file on purpose
    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(namespace["double"])
    double = _compiled([numba.int64(numba.int64)])(namespace["double"])
    assert double(21) == 42


def test_read_only_inputs_are_diffed() -> None:
    """Checkpoint readers hand over np.frombuffer views of file bytes, which are read-only."""
    base, target = _random_pair(np.uint16, 1000, 0.1, seed=9)
    base_ro = np.frombuffer(base.tobytes(), np.uint16)
    target_ro = np.frombuffer(target.tobytes(), np.uint16)
    assert not base_ro.flags.writeable
    _assert_matches_reference(base_ro, target_ro)
