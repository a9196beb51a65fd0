"""Real tensors of every dtype safetensors knows, as the unsigned views the codec takes."""

from __future__ import annotations

import numpy as np
import torch

# safetensors dtype name -> torch dtype
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def raw_view(tensor: torch.Tensor) -> np.ndarray:
    """The flat unsigned-int view of a tensor's bytes, as a checkpoint reader would pass it."""
    flat = tensor.contiguous().reshape(-1)
    as_bytes = flat.view(torch.uint8).numpy()
    return as_bytes.view(_UNSIGNED[tensor.element_size()])


def make_tensor(dtype: torch.dtype, n: int, generator: torch.Generator) -> torch.Tensor:
    """Values that look like the dtype's real data (weights for floats, ids for ints)."""
    if dtype.is_floating_point:
        return (torch.randn(n, generator=generator, dtype=torch.float32) * 0.02).to(dtype)
    if dtype == torch.bool:
        return torch.rand(n, generator=generator) < 0.5
    info = torch.iinfo(dtype)
    low, high = max(info.min, -1000), min(info.max, 1000)
    return torch.randint(low, high, (n,), generator=generator, dtype=torch.int64).to(dtype)
