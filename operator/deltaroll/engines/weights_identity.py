"""The identity of the weights an engine holds in memory: per-tensor digests and a version id.

Computed with :mod:`deltaroll.checkpoint`'s own functions over the bytes of the live tensors, so
it equals ``checkpoint_version()`` of the same weights on disk: a test (or an operator) can prove
that an engine serves exactly a published version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deltaroll.checkpoint import tensor_digest
from deltaroll.checkpoint import version_id as checkpoint_version_id

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
    digest: str


def tensor_identity(name: str, tensor: torch.Tensor) -> TensorIdentity:
    """Digest the bytes ``tensor`` holds right now (copied to the CPU if it lives elsewhere)."""
    import torch

    dtype = SAFETENSORS_DTYPE_NAMES.get(str(tensor.dtype))
    if dtype is None:
        raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot hold")
    raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return TensorIdentity(name, dtype, tuple(tensor.shape), tensor_digest(raw))


def version_id(entries: Iterable[TensorIdentity], files: Iterable[tuple[str, str]] = ()) -> str:
    """The version id of a complete set of tensors and the files loaded with them, as
    (name, digest) (order does not matter)."""
    return checkpoint_version_id(((e.name, e.dtype, e.shape, e.digest) for e in entries), files)
