"""Every dtype round-trips bit-exactly, both ways, whatever the kind the encoder picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deltaroll.codec import TensorKind, apply_tensor_delta, encode_tensor_delta

from .tensors import SAFETENSORS_DTYPES, make_tensor, raw_view


def assert_round_trip(base: np.ndarray, target: np.ndarray) -> TensorKind:
    encoded = encode_tensor_delta(base, target)
    assert encoded.total_elements == base.size
    assert encoded.changed_elements == int(np.count_nonzero(base != target))
    forward = base.copy()
    apply_tensor_delta(forward, encoded, side="base")
    assert forward.tobytes() == target.tobytes()
    backward = target.copy()
    apply_tensor_delta(backward, encoded, side="target")
    assert backward.tobytes() == base.tobytes()
    return encoded.kind


@pytest.mark.parametrize("name", sorted(SAFETENSORS_DTYPES))
@pytest.mark.parametrize("changed_fraction", [0.0, 0.001, 0.03, 0.5, 1.0])
def test_every_dtype_round_trips(name: str, changed_fraction: float, generator) -> None:
    dtype = SAFETENSORS_DTYPES[name]
    n = 20_000
    base_tensor = make_tensor(dtype, n, generator)
    update = make_tensor(dtype, n, generator)
    chosen = torch.rand(n, generator=generator) < changed_fraction
    target_tensor = torch.where(chosen, update, base_tensor)
    kind = assert_round_trip(raw_view(base_tensor), raw_view(target_tensor))
    if changed_fraction == 0.0:
        assert kind is TensorKind.UNCHANGED


def test_small_optimizer_step_on_bf16_is_sparse(generator) -> None:
    master = torch.randn(50_000, generator=generator) * 0.02
    base = master.to(torch.bfloat16)
    stepped = master - 3e-6 * torch.sign(torch.randn(50_000, generator=generator))
    target = stepped.to(torch.bfloat16)
    encoded = encode_tensor_delta(raw_view(base), raw_view(target))
    assert encoded.kind is TensorKind.SPARSE
    assert len(encoded.payload) < raw_view(target).nbytes / 4
    assert_round_trip(raw_view(base), raw_view(target))


def test_fp32_training_step_is_never_much_larger_than_the_target(generator) -> None:
    base = torch.randn(50_000, generator=generator)
    target = base - 1e-3 * torch.randn(50_000, generator=generator)
    encoded = encode_tensor_delta(raw_view(base), raw_view(target))
    # Almost every element changed: the dense form, whose memory stays bounded, is the one built.
    assert encoded.kind is TensorKind.DENSE
    assert len(encoded.payload) <= raw_view(target).nbytes * 1.01 + 64
    assert_round_trip(raw_view(base), raw_view(target))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_nan_payloads_and_signed_zeros_survive(dtype) -> None:
    """NaN != NaN and -0.0 == 0.0 as floats; the codec must see the bits, not the values."""
    width = torch.finfo(dtype).bits // 8
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    sign = unsigned(1) << unsigned(8 * width - 1)
    all_ones = unsigned(np.iinfo(unsigned).max)
    quiet_nan = raw_view(torch.tensor([float("nan")], dtype=dtype))[0]
    base = np.array([0, sign, quiet_nan, quiet_nan | 1, all_ones, 0], dtype=unsigned)
    target = np.array([sign, 0, quiet_nan | 1, quiet_nan, all_ones, 0], dtype=unsigned)
    assert_round_trip(base, target)
    assert_round_trip(target, base)


def test_edge_sizes() -> None:
    for n in (0, 1, 2, 3, 255, 257):
        base = np.arange(n, dtype=np.uint16)
        target = base.copy()
        if n:
            target[-1] ^= 0x8000
        assert_round_trip(base, target)


def test_positions_across_block_boundaries() -> None:
    """The diff works in blocks; changes on both sides of every boundary must be found."""
    from deltaroll.codec.kernels import BLOCK

    n = 3 * BLOCK + 5
    base = np.zeros(n, dtype=np.uint16)
    target = base.copy()
    for boundary in (BLOCK, 2 * BLOCK, 3 * BLOCK):
        target[boundary - 1] = 1
        target[boundary] = 2
    target[-1] = 3
    assert_round_trip(base, target)


def test_long_runs_of_unchanged_elements_need_wide_gaps() -> None:
    """A gap that overflows 32 bits is not realistic to allocate; 70 000 overflows 16 bits."""
    base = np.zeros(200_000, dtype=np.uint8)
    target = base.copy()
    target[[0, 70_001, 199_999]] = [1, 2, 255]
    assert_round_trip(base, target)


def test_dense_delta_spans_chunks(monkeypatch) -> None:
    """Dense deltas stream in chunks; a tensor of several chunks (and a partial one) works."""
    import deltaroll.codec.dense as dense

    monkeypatch.setattr(dense, "CHUNK_ELEMENTS", 1000)
    rng = np.random.default_rng(3)
    base = rng.integers(0, 1 << 32, 4321, dtype=np.uint32)
    target = base ^ rng.integers(1, 1 << 8, 4321, dtype=np.uint32)
    assert assert_round_trip(base, target) is TensorKind.DENSE


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_a_strided_view_is_patched_in_place(dtype) -> None:
    """Apply writes through the caller's view, even a non-contiguous one, and nowhere else."""
    rng = np.random.default_rng(11)
    base = rng.integers(0, 1 << 8, 3000, dtype=dtype)
    target = base.copy()
    target[::7] += dtype(1)
    encoded = encode_tensor_delta(base, target)
    assert encoded.kind is TensorKind.SPARSE
    interleaved = np.zeros(2 * base.size, dtype)
    interleaved[::2] = base
    apply_tensor_delta(interleaved[::2], encoded, side="base")
    assert interleaved[::2].tobytes() == target.tobytes()
    assert not interleaved[1::2].any()
    apply_tensor_delta(interleaved[::2], encoded, side="target")
    assert interleaved[::2].tobytes() == base.tobytes()
