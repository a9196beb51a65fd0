"""Compiled (numba) loops for the diff, the sparse encode and apply, where numpy needs many
passes.

Why: with numpy, finding the changed elements takes a compare, an ``np.flatnonzero`` (about
1 ns per element, the bottleneck) and two gathers, each a pass of its own; a plain compiled loop
with a branch per element mispredicts on every change of a ~5 %-changed tensor. The diff kernels
read each input once: the compares of a block of 64 elements vectorize into one 64-bit mask, and
only the mask's set bits are visited, so the diff runs at about the speed of copying the bytes.
The apply kernel replaces an argsort and several numpy passes (see its docstring); the encode
kernels reduce each window of changes in one pass and group them by context without a sort.

Each kernel is compiled at import for exactly the array types given in its signatures (the four
unsigned element types the codec takes; anything else is a TypeError, never a silent new
compilation). The machine code is cached on disk (``cache=True``), so a process pays the
compilation (a few seconds) only when no cached copy exists; loading it takes ~0.4 s with numba's
import. Where no cache location is writable (a read-only root filesystem without a writable
``NUMBA_CACHE_DIR``), the kernels are compiled in memory instead, once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from deltaroll.codec.context import EXCEPTION_CONTEXT
from deltaroll.codec.numpy_kernels import NOT_ASCENDING

# Counts the trailing zero bits of an integer (LLVM's cttz: one instruction); typed here for
# mypy, which sees numba's intrinsic object rather than the function it compiles to.
_trailing_zeros = cast(Callable[[np.uint64], int], trailing_zeros)

_ELEMENT_TYPES = (numba.uint8, numba.uint16, numba.uint32, numba.uint64)
BLOCK = 64  # elements per mask word


def _input(dtype: Any) -> Any:
    """A contiguous 1-d array the kernel only reads: accepts read-only arrays (np.frombuffer of
    a payload, a memory-mapped checkpoint) as well as writable ones."""
    return numba.types.Array(dtype, 1, "C", readonly=True)


def _compiled(signatures: list[Any]) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit`` for these signatures, cached on disk where a cache location is writable.

    ``nogil`` lets callers diff several tensors on threads.
    """

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            return numba.njit(signatures, cache=True, nogil=True)(function)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            if "no locator available" not in str(exc):
                raise
            return numba.njit(signatures, nogil=True)(function)

    return decorate


@_compiled([numba.int64(_input(t), _input(t)) for t in _ELEMENT_TYPES])
def count_changed(base: np.ndarray, target: np.ndarray) -> int:  # pragma: no cover - compiled
    """How many elements differ bitwise (a compare-and-add loop; LLVM vectorizes it)."""
    changed = 0
    for i in range(base.shape[0]):
        changed += base[i] != target[i]
    return changed


@_compiled(
    [numba.int64(_input(t), _input(t), numba.int64[::1], t[::1], t[::1]) for t in _ELEMENT_TYPES]
)
def emit_changed(
    base: np.ndarray,
    target: np.ndarray,
    positions: np.ndarray,
    base_values: np.ndarray,
    target_values: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Write the position and both values of every differing element, in ascending order, and
    return how many there are; -1 if the outputs (all of one length) are too short for them.

    Per block of 64 elements, the compares are packed into a 64-bit mask (vectorized, no
    branches); then one step per set bit, found by counting trailing zeros, writes the outputs.
    """
    n = base.shape[0]
    capacity = positions.shape[0]
    full_blocks_end = n - n % BLOCK
    written = 0
    for start in range(0, full_blocks_end, BLOCK):
        mask = np.uint64(0)
        for j in range(BLOCK):
            mask |= np.uint64(base[start + j] != target[start + j]) << np.uint64(j)
        while mask:
            if written == capacity:
                return -1
            position = start + np.int64(_trailing_zeros(mask))
            positions[written] = position
            base_values[written] = base[position]
            target_values[written] = target[position]
            written += 1
            mask &= mask - np.uint64(1)
    for i in range(full_blocks_end, n):
        if base[i] != target[i]:
            if written == capacity:
                return -1
            positions[written] = i
            base_values[written] = base[i]
            target_values[written] = target[i]
            written += 1
    return written


@_compiled(
    [
        numba.int64(
            _input(numba.int64),
            _input(t),
            _input(t),
            numba.int64,
            numba.uint64,
            numba.uint64,
            numba.uint8[::1],
            numba.uint16[::1],
            t[::1],
            numba.uint64[::1],
        )
        for t in _ELEMENT_TYPES
    ]
)
def compact_changes(
    positions: np.ndarray,
    base_values: np.ndarray,
    target_values: np.ndarray,
    previous: int,
    context_shift: np.uint64,
    bits: np.uint64,
    short_gaps: np.ndarray,
    contexts: np.ndarray,
    changes: np.ndarray,
    long_gaps: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Reduce a window of changes to what a sparse payload stores, in one pass: per change its
    gap byte (ESCAPE 255, the gap then appended to ``long_gaps``), its context (256 where it
    differs between the sides) and its zigzag-coded ``target - base``; returns how many long
    gaps were written, or NOT_ASCENDING unless the positions ascend from ``previous``.

    The outputs are as long as ``positions`` (``long_gaps`` too: every gap may be long). All
    arithmetic is on uint64, wrapping like the ``bits``-wide element type once stored.
    """
    one, byte, escape = np.uint64(1), np.uint64(0xFF), np.uint64(255)
    exception = np.uint64(EXCEPTION_CONTEXT)
    sign_shift = bits - one
    written_long = 0
    for k in range(positions.shape[0]):
        if positions[k] <= previous:
            return NOT_ASCENDING
        gap = np.uint64(positions[k] - previous - 1)
        previous = positions[k]
        if gap >= escape:
            short_gaps[k] = escape
            long_gaps[written_long] = gap
            written_long += 1
        else:
            short_gaps[k] = gap
        base, target = np.uint64(base_values[k]), np.uint64(target_values[k])
        base_context = (base >> context_shift) & byte
        target_context = (target >> context_shift) & byte
        contexts[k] = exception if base_context != target_context else base_context
        difference = target - base
        negative = (difference >> sign_shift) & one
        changes[k] = (difference << one) ^ (np.uint64(0) - negative)
    return written_long


@_compiled([numba.void(_input(numba.uint16), _input(t), numba.uint8[::1]) for t in _ELEMENT_TYPES])
def group_planes(
    contexts: np.ndarray, changes: np.ndarray, planes: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Write ``changes`` grouped by context (a stable counting sort over the 257 contexts) as
    byte planes into ``planes`` (``changes.size`` x width bytes): what ``to_planes`` of the
    stably argsorted changes gives, without an int64 order array or a gathered copy."""
    count = changes.shape[0]
    width = planes.shape[0] // max(count, 1)
    # per_context[c + 1]: how many changes have context c; summed up, where context c starts.
    per_context = np.zeros(EXCEPTION_CONTEXT + 2, np.int64)
    for context in contexts:
        per_context[context + 1] += 1
    next_slot = np.cumsum(per_context)
    for k in range(count):
        slot = next_slot[contexts[k]]
        next_slot[contexts[k]] += 1
        value = np.uint64(changes[k])
        for b in range(width):
            planes[b * count + slot] = (value >> np.uint64(8 * b)) & np.uint64(0xFF)


# What apply_sparse_changes found wrong (0: nothing, and the changes were applied).
ZERO_CHANGE = 1
EXCEPTIONS_DISAGREE = 2


@_compiled(
    [
        # current may be a strided view (it is patched in place), hence t[:], not t[::1].
        numba.int64(
            t[:], _input(numba.int64), _input(numba.int64), _input(t), numba.boolean, numba.uint64
        )
        for t in _ELEMENT_TYPES
    ]
)
def apply_sparse_changes(
    current: np.ndarray,
    positions: np.ndarray,
    exception_ranks: np.ndarray,
    sorted_changes: np.ndarray,
    forward: bool,
    context_shift: np.uint64,
) -> int:  # pragma: no cover - compiled
    """Apply a sparse payload's decoded changes to ``current`` (see :mod:`deltaroll.codec.sparse`)
    and return 0; or, leaving ``current`` untouched, ZERO_CHANGE if a listed element would not
    change, else EXCEPTIONS_DISAGREE if the elements whose context moves are not exactly the
    listed exceptions (a wrong base).

    ``positions`` must be ascending and inside ``current``, ``exception_ranks`` ascending and
    below ``positions.size``, ``sorted_changes`` as long as ``positions``: the caller checks.
    Why compiled: the changes are stored grouped by context with a stable sort; undoing it by a
    counting sort over the 257 contexts (0..255 and the exceptions'), with the gather, the
    zigzag decoding, the checks and the scatter in the same loops, replaces an argsort and
    several numpy passes. All arithmetic is on uint64 (numba would mix smaller unsigned types
    with signed ones), wrapping like the element type once stored.
    """
    changed = positions.shape[0]
    one, byte = np.uint64(1), np.uint64(0xFF)
    context = np.empty(changed, np.int16)
    for k in range(changed):
        context[k] = (np.uint64(current[positions[k]]) >> context_shift) & byte
    for rank in exception_ranks:
        context[rank] = EXCEPTION_CONTEXT
    # next_change[c]: where the next change of an element in context c lies in sorted_changes.
    next_change = np.zeros(EXCEPTION_CONTEXT + 1, np.int64)
    for k in range(changed):
        next_change[context[k]] += 1
    start = 0
    for c in range(EXCEPTION_CONTEXT + 1):
        start, next_change[c] = start + next_change[c], start

    updated = np.empty_like(sorted_changes)
    zero_change = disagree = False
    for k in range(changed):
        known = np.uint64(current[positions[k]])
        zigzag = np.uint64(sorted_changes[next_change[context[k]]])
        next_change[context[k]] += 1
        # zigzag 2m means +m, 2m+1 means -(m+1); the reverse direction subtracts it.
        magnitude = (zigzag >> one) + (zigzag & one)
        added = known + magnitude
        subtracted = known - magnitude
        updated[k] = added if ((zigzag & one) == 0) == forward else subtracted
        new_context = (np.uint64(updated[k]) >> context_shift) & byte
        moved = new_context != (known >> context_shift) & byte
        zero_change |= zigzag == 0
        disagree |= moved != (context[k] == EXCEPTION_CONTEXT)
    if zero_change:
        return ZERO_CHANGE
    if disagree:
        return EXCEPTIONS_DISAGREE
    for k in range(changed):
        current[positions[k]] = updated[k]
    return 0


# What gaps_to_positions found wrong (0: nothing, and ``out`` holds the positions).
LONG_GAPS_MISMATCH = 1
POSITION_OUT_OF_RANGE = 2


@_compiled(
    [
        numba.int64(
            _input(numba.uint8), _input(numba.uint64), numba.uint8, numba.int64, numba.int64[::1]
        )
    ]
)
def gaps_to_positions(
    short: np.ndarray, long: np.ndarray, escape: np.uint8, limit: int, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Ascending positions from byte gaps (``escape``: the gap is the next ``long`` one) into
    ``out``; 0, or LONG_GAPS_MISMATCH when the escapes and the long gaps do not pair up, or
    POSITION_OUT_OF_RANGE when a position reaches ``limit`` (the caller checks that every long
    gap is below ``limit``, so the running position never wraps). One pass, where numpy needs a
    cast, a masked assignment, a cumulative sum and two checks."""
    position = np.int64(-1)
    next_long = 0
    for index in range(short.shape[0]):
        gap = np.int64(short[index])
        if short[index] == escape:
            if next_long == long.shape[0]:
                return LONG_GAPS_MISMATCH
            gap = np.int64(long[next_long])
            next_long += 1
        position += gap + 1
        if position >= limit:
            return POSITION_OUT_OF_RANGE
        out[index] = position
    return 0 if next_long == long.shape[0] else LONG_GAPS_MISMATCH
