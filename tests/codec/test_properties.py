"""Property tests: any pair of same-length bit patterns round-trips, forward and reverse."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deltaroll.codec import apply_tensor_delta, encode_tensor_delta

UNSIGNED = [np.uint8, np.uint16, np.uint32, np.uint64]


@st.composite
def base_and_target(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A base of arbitrary bits and a target that differs in some elements, by small integer
    steps (like optimizer updates, crossing exponents and signs) or by arbitrary bits."""
    dtype = np.dtype(draw(st.sampled_from(UNSIGNED)))
    n = draw(st.integers(0, 600))
    base = draw(arrays(dtype, n))
    changed = draw(arrays(np.bool_, n))
    steps = draw(arrays(np.int8, n)).astype(dtype)  # wraps: negative steps become large
    arbitrary = draw(arrays(dtype, n))
    use_arbitrary = draw(st.booleans())
    target = np.where(changed, arbitrary if use_arbitrary else base + steps, base).astype(dtype)
    return base, target


@settings(max_examples=300, deadline=None)
@given(base_and_target(), st.integers(1, 5))
def test_any_pair_round_trips(pair: tuple[np.ndarray, np.ndarray], level: int) -> None:
    base, target = pair
    encoded = encode_tensor_delta(base, target, level=level)
    assert encoded.changed_elements == int(np.count_nonzero(base != target))
    # Never much larger than the target itself, whatever the data (fixed framing aside).
    assert len(encoded.payload) <= 1.02 * target.nbytes + 200
    forward = base.copy()
    apply_tensor_delta(forward, encoded, side="base")
    assert forward.tobytes() == target.tobytes()
    backward = target.copy()
    apply_tensor_delta(backward, encoded, side="target")
    assert backward.tobytes() == base.tobytes()
