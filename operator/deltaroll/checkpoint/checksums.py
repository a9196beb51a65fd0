"""Per-tensor checksums and the version id of a set of tensors.

A tensor's checksum is xxh3-128 of its raw bytes: fast enough to recompute on every apply. The
version id is a SHA-256 over every tensor's (name, dtype, shape, checksum), sorted by name, so
the same weights get the same id however they are sharded; it is shortened to 128 bits (32 hex
characters) so it fits in Kubernetes label values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import xxhash

from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.manifest import TensorEntry
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint

VERSION_ID_HEX_CHARS = 32


def tensor_checksum(data: np.ndarray | bytes | bytearray | memoryview) -> str:
    """xxh3-128 of a tensor's raw little-endian bytes, as 32 hex characters."""
    return xxhash.xxh3_128_hexdigest(byte_view(data))


def version_from_tensor_entries(
    entries: Iterable[tuple[str, str, Sequence[int], str]],
) -> str:
    """The version id of tensors given as (name, safetensors dtype, shape, checksum).

    Order-independent: entries are sorted by name, then SHA-256 is taken over their compact JSON
    ``[[name, dtype, [shape...], checksum], ...]`` and cut to 32 hex characters.
    """
    canonical = sorted(
        [name, dtype, list(shape), checksum] for name, dtype, shape, checksum in entries
    )
    blob = json.dumps(canonical, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:VERSION_ID_HEX_CHARS]


def side_version(entries: Iterable[TensorEntry], side: Literal["base", "target"]) -> str:
    """The version id of one side of a delta's tensor entries (order does not matter): what a
    whole checkpoint's id would be, from a manifest alone."""
    sides = ((entry.name, entry.side(side)) for entry in entries)
    return version_from_tensor_entries(
        (name, s.dtype, s.shape, s.checksum) for name, s in sides if s is not None
    )


def checkpoint_checksums(
    checkpoint: Checkpoint, on_bytes: Callable[[int], None] | None = None
) -> dict[str, str]:
    """Checksum every tensor of an opened checkpoint, streaming one tensor at a time."""
    checksums = {}
    for name, ref in checkpoint.tensors.items():
        checksums[name] = tensor_checksum(checkpoint.read_bits(name))
        if on_bytes:
            on_bytes(ref.nbytes)
    return checksums


def version_of(checkpoint: Checkpoint, checksums: dict[str, str]) -> str:
    return version_from_tensor_entries(
        (name, ref.dtype, ref.shape, checksums[name]) for name, ref in checkpoint.tensors.items()
    )


def checkpoint_version(path: Path) -> str:
    """The version id of the checkpoint at ``path`` (reads every tensor once)."""
    checkpoint = open_checkpoint(path)
    return version_of(checkpoint, checkpoint_checksums(checkpoint))
