"""The windowed encoder (a tensor streamed from disk) must produce the in-memory encoder's bytes.

Both encode the same stored format and name payloads by digest, so a diff may not depend on
how the tensor was read: same kind, payload, changed count and change-set digest, whatever the
window (one element, odd sizes that cut the 64-element blocks, larger than the tensor).
"""

from __future__ import annotations

import numpy as np
import pytest

from deltaroll.codec import TensorKind, apply_tensor_delta, encode_tensor_delta
from deltaroll.codec import delta as delta_module
from deltaroll.codec.delta import encode_windowed_delta

from .test_payload_pins import CASES


class _ReusingReader:
    """Serves windows the way a file reader does: in one buffer per side that the next read
    overwrites, so an encoder that kept a window past the next read would see other data."""

    def __init__(self, base: np.ndarray, target: np.ndarray) -> None:
        self._base, self._target = base, target
        self._buffers = (np.empty_like(base), np.empty_like(target))
        self.reads: list[tuple[int, int]] = []

    def __call__(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        self.reads.append((start, count))
        out = tuple(buffer[:count] for buffer in self._buffers)
        out[0][:] = self._base[start : start + count]
        out[1][:] = self._target[start : start + count]
        return out[0], out[1]


@pytest.mark.parametrize("window", [1, 63, 1000, 4097, 1 << 30])
@pytest.mark.parametrize("case", sorted(CASES))
def test_windowed_encoding_equals_in_memory(case: str, window: int) -> None:
    make, level = CASES[case]
    base, target = make()
    if window == 1 and base.size > 20_000:
        pytest.skip("one-element windows of a large case only repeat the small cases")
    expected = encode_tensor_delta(base, target, level=level)
    reader = _ReusingReader(base, target)
    encoded = encode_windowed_delta(reader, base.dtype, base.size, level=level, window=window)
    assert encoded == expected
    first_pass = [start for start, _ in reader.reads][: -(-base.size // window)]
    assert first_pass == list(range(0, base.size, window))


def test_a_sparse_tensor_is_read_once() -> None:
    make, level = CASES["bf16_6pct"]
    base, target = make()
    reader = _ReusingReader(base, target)
    encoded = encode_windowed_delta(reader, base.dtype, base.size, level=level, window=4096)
    assert encoded.kind is TensorKind.SPARSE
    assert sum(count for _, count in reader.reads) == base.size


def test_over_the_sparse_budget_goes_dense_with_the_same_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make, level = CASES["bf16_6pct"]
    base, target = make()
    expected = encode_tensor_delta(base, target, level=level)
    monkeypatch.setattr(delta_module, "WINDOWED_SPARSE_BUDGET_BYTES", 1000 * 12)
    encoded = encode_windowed_delta(
        _ReusingReader(base, target), base.dtype, base.size, level=level, window=4096
    )
    assert encoded.kind is TensorKind.DENSE
    assert encoded.changes_digest == expected.changes_digest
    assert encoded.changed_elements == expected.changed_elements
    restored = base.copy()
    apply_tensor_delta(restored, encoded, side="base")
    assert np.array_equal(restored, target)
