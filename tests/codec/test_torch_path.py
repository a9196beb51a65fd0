"""The torch diff produces the very bytes of the numpy diff, so a GPU Job and a laptop agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deltaroll.codec import CodecError, apply_tensor_delta, encode_tensor_delta

from .tensors import SAFETENSORS_DTYPES, make_tensor, raw_view

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(SAFETENSORS_DTYPES))
@pytest.mark.parametrize("changed_fraction", [0.0, 0.02, 0.9])
def test_torch_and_numpy_payloads_are_identical(
    name: str, changed_fraction: float, device: str, generator
) -> None:
    dtype = SAFETENSORS_DTYPES[name]
    base = make_tensor(dtype, 30_000, generator).reshape(100, 300)
    update = make_tensor(dtype, 30_000, generator).reshape(100, 300)
    chosen = torch.rand(100, 300, generator=generator) < changed_fraction
    target = torch.where(chosen, update, base)
    from_numpy = encode_tensor_delta(raw_view(base), raw_view(target))
    from_torch = encode_tensor_delta(base.to(device), target.to(device))
    assert from_torch == from_numpy
    restored = raw_view(base).copy()
    apply_tensor_delta(restored, from_torch, side="base")
    assert restored.tobytes() == raw_view(target).tobytes()


def test_torch_diff_spans_chunks(monkeypatch) -> None:
    """The torch path also works in chunks; positions must be offset per chunk."""
    import deltaroll.codec.torch_diff as torch_diff

    monkeypatch.setattr(torch_diff, "CHUNK_ELEMENTS", 1000)
    base = torch.zeros(4500, dtype=torch.int16)
    target = base.clone()
    target[[0, 999, 1000, 2001, 4499]] = torch.tensor([1, 2, 3, 4, 5], dtype=torch.int16)
    encoded = encode_tensor_delta(base, target)
    assert encoded == encode_tensor_delta(raw_view(base), raw_view(target))
    assert encoded.changed_elements == 5


def test_torch_inputs_must_match() -> None:
    base = torch.zeros(10, dtype=torch.bfloat16)
    with pytest.raises(CodecError):
        encode_tensor_delta(base, torch.zeros(11, dtype=torch.bfloat16))
    with pytest.raises(CodecError):
        encode_tensor_delta(base, torch.zeros(10, dtype=torch.float16))
    with pytest.raises(CodecError):
        encode_tensor_delta(base, np.zeros(10, dtype=np.uint16))  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        encode_tensor_delta(np.zeros(10, dtype=np.uint16), base)  # type: ignore[arg-type]
