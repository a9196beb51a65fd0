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
``NUMBA_CACHE_DIR``), the kernels are compiled in memory instead, once per process. The images
ship them compiled (see :mod:`deltaroll.codec.kernel_cache`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from deltaroll.codec.context import EXCEPTION_CONTEXT
from deltaroll.codec.kernel_cache import seed_numba_cache
from deltaroll.codec.numpy_kernels import NOT_ASCENDING

seed_numba_cache()  # before the first kernel below looks for its cached machine code

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


# What resolve_changes found wrong (0: nothing, and the values were resolved).
ZERO_CHANGE = 1
EXCEPTIONS_DISAGREE = 2


@_compiled(
    [
        numba.int64(t[::1], _input(numba.int64), _input(t), numba.boolean, numba.uint64)
        for t in _ELEMENT_TYPES
    ]
)
def resolve_changes(
    values: np.ndarray,
    exception_ranks: np.ndarray,
    sorted_changes: np.ndarray,
    forward: bool,
    context_shift: np.uint64,
) -> int:  # pragma: no cover - compiled
    """Turn ``values`` (the known side's values at a sparse payload's positions, in order) into
    the other side's, in place, and return 0; or ZERO_CHANGE if a listed element would not
    change, else EXCEPTIONS_DISAGREE if the elements whose context moves are not exactly the
    listed exceptions (a wrong base); ``values`` is then partly resolved, and the caller drops it.

    ``exception_ranks`` must be ascending and below ``values.size``, ``sorted_changes`` the
    payload's zigzag changes (grouped by context), as long as ``values``: the caller checks.
    Why compiled: the changes are stored grouped by context with a stable sort; undoing it by a
    counting sort over the 257 contexts (0..255 and the exceptions'), with the zigzag decoding
    and the checks in the same loops, replaces an argsort and several numpy passes. All
    arithmetic is on uint64 (numba would mix smaller unsigned types with signed ones), wrapping
    like the element type once stored.
    """
    changed = values.shape[0]
    one, byte = np.uint64(1), np.uint64(0xFF)
    # next_change[c]: where the next change of an element in context c lies.
    next_change = np.zeros(EXCEPTION_CONTEXT + 1, np.int64)
    for k in range(changed):
        next_change[(np.uint64(values[k]) >> context_shift) & byte] += 1
    for rank in exception_ranks:
        next_change[(np.uint64(values[rank]) >> context_shift) & byte] -= 1
        next_change[EXCEPTION_CONTEXT] += 1
    start = 0
    for c in range(EXCEPTION_CONTEXT + 1):
        start, next_change[c] = start + next_change[c], start

    # Branch-free where the data is random (the sign of a change): a mispredicted branch per
    # element made this loop three times slower.
    subtract_odd = np.uint64(0) if forward else one
    zero_change = disagree = np.uint64(0)
    exception = 0
    next_exception = exception_ranks[0] if exception_ranks.shape[0] else changed
    for k in range(changed):
        known = np.uint64(values[k])
        context = (known >> context_shift) & byte
        listed = k == next_exception
        if listed:  # rare: the exceptions
            exception += 1
            has_next = exception < exception_ranks.shape[0]
            next_exception = exception_ranks[exception] if has_next else changed
            slot = np.int64(EXCEPTION_CONTEXT)
        else:
            slot = np.int64(context)
        index = next_change[slot]
        next_change[slot] = index + 1
        zigzag = np.uint64(sorted_changes[index])
        # zigzag 2m means +m, 2m+1 means -(m+1); the reverse direction subtracts it: the
        # magnitude is negated (two's complement, by an all-ones mask) where the parity says.
        magnitude = (zigzag >> one) + (zigzag & one)
        negate = np.uint64(0) - ((zigzag ^ subtract_odd) & one)
        values[k] = known + ((magnitude ^ negate) - negate)
        moved = (np.uint64(values[k]) >> context_shift) & byte != context
        zero_change |= np.uint64(zigzag == 0)
        disagree |= np.uint64(moved != listed)
    if zero_change:
        return ZERO_CHANGE
    return EXCEPTIONS_DISAGREE if disagree else 0


# What next_positions found wrong (returned negated; otherwise it returns a count).
LONG_GAPS_MISMATCH = 1
POSITION_OUT_OF_RANGE = 2


@_compiled(
    [
        numba.int64(
            _input(numba.uint8),
            _input(numba.uint64),
            numba.uint8,
            numba.int64,
            numba.int64[::1],
            numba.int64,
            numba.int64[::1],
        )
    ]
)
def next_positions(
    short: np.ndarray,
    long: np.ndarray,
    escape: np.uint8,
    limit: int,
    cursor: np.ndarray,
    end: int,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Decode the next ascending positions below ``end`` from byte gaps (``escape``: the gap is
    the next ``long`` one) into ``out``, at most ``out.size``, resuming at ``cursor`` (next short
    gap, next long gap, last position; updated); return how many, or minus LONG_GAPS_MISMATCH
    when the escapes and the long gaps do not pair up, minus POSITION_OUT_OF_RANGE when a
    position reaches ``limit`` (the caller checks that every long gap is below ``limit``, so the
    running position never wraps). One pass, where numpy needs a cast, a masked assignment, a
    cumulative sum and two checks; resumable, so a caller holds one window of positions."""
    index, next_long, position = cursor[0], cursor[1], cursor[2]
    stop, bound = min(short.shape[0], index + out.shape[0]), min(end, limit)
    count = 0
    for i in range(index, stop):
        gap = np.int64(short[i])
        escaped = short[i] == escape
        if escaped:
            if next_long == long.shape[0]:
                return -LONG_GAPS_MISMATCH
            gap = np.int64(long[next_long])
        candidate = position + gap + 1
        if candidate >= bound:  # one compare on the way: past the window, or corrupt
            if candidate >= limit:
                return -POSITION_OUT_OF_RANGE
            break
        position = candidate
        next_long += escaped
        out[count] = position
        count += 1
    index += count
    if index == short.shape[0] and next_long != long.shape[0]:
        return -LONG_GAPS_MISMATCH
    cursor[0], cursor[1], cursor[2] = index, next_long, position
    return count


@_compiled(
    [numba.void(_input(t), _input(numba.int64), numba.int64, t[::1]) for t in _ELEMENT_TYPES]
)
def gather(
    window: np.ndarray, positions: np.ndarray, first: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out[i] = window[positions[i] - first]`` (positions inside the window: caller checks)."""
    for i in range(positions.shape[0]):
        out[i] = window[positions[i] - first]


@_compiled(
    [numba.void(t[::1], _input(numba.int64), numba.int64, _input(t)) for t in _ELEMENT_TYPES]
)
def scatter(
    window: np.ndarray, positions: np.ndarray, first: int, values: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``window[positions[i] - first] = values[i]`` (inside the window: caller checks)."""
    for i in range(positions.shape[0]):
        window[positions[i] - first] = values[i]


@_compiled([numba.void(_input(numba.uint8), t[::1]) for t in _ELEMENT_TYPES])
def interleave_planes(planes: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[i]`` from its bytes ``planes[b * out.size + i]`` (b = 0 the lowest), a plane at a
    time (loops LLVM vectorizes), where numpy needs a cast, a shift, an or and a temporary per
    plane."""
    count = out.shape[0]
    for plane in range(out.itemsize):
        row = planes[plane * count : (plane + 1) * count]
        if plane == 0:
            for i in range(count):
                out[i] = row[i]
        else:
            shift = np.uint64(8 * plane)
            for i in range(count):
                out[i] |= np.uint64(row[i]) << shift
