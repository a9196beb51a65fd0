"""The identity of the weights an engine holds in memory: per-tensor checksums and a version id.

Computed with :mod:`deltaroll.checkpoint`'s own functions over the bytes of the live tensors, so
it equals ``checkpoint_version()`` of the same weights on disk: a test (or an operator) can prove
that an engine serves exactly a published version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deltaroll.checkpoint import tensor_checksum, version_from_tensor_entries

if TYPE_CHECKING:
    import torch

#: safetensors' dtype names, the ones checkpoint manifests use.
SAFETENSORS_DTYPE_NAMES: dict[str, str] = {
    "torch.float64": "F64",
    "torch.float32": "F32",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.float8_e4m3fn": "F8_E4M3",
    "torch.float8_e5m2": "F8_E5M2",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint64": "U64",
    "torch.uint32": "U32",
    "torch.uint16": "U16",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


@dataclass(frozen=True)
class TensorIdentity:
    """One tensor as a version id sees it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    checksum: str


def tensor_identity(name: str, tensor: torch.Tensor) -> TensorIdentity:
    """Checksum the bytes ``tensor`` holds right now (copied to the CPU if it lives elsewhere)."""
    import torch

    dtype = SAFETENSORS_DTYPE_NAMES.get(str(tensor.dtype))
    if dtype is None:
        raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot hold")
    raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return TensorIdentity(name, dtype, tuple(tensor.shape), tensor_checksum(raw))


def version_id(entries: Iterable[TensorIdentity]) -> str:
    """The version id of a complete set of tensors (order does not matter)."""
    return version_from_tensor_entries((e.name, e.dtype, e.shape, e.checksum) for e in entries)
