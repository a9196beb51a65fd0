"""Writing one safetensors file of a layout: its exact header, then its tensors in data order."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.header import SafetensorsHeader, parse_header
from deltaroll.checkpoint.manifest import WeightFileLayout
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.transform import Side


def layout_header(
    layout: WeightFileLayout,
    names: list[str],
    objects: PackReader,
    entries: dict[str, TensorEntry],
    side: Side,
) -> SafetensorsHeader:
    """The stored header of ``layout`` (whose tensors are ``names``), checked against the
    manifest's tensors on ``side``."""
    header = parse_header(bytes(objects.read(layout.header)), source=f"the header of {layout.name}")
    described = []
    for tensor in header.tensors:
        entry = entries.get(tensor.name)
        expected = entry.side(side) if entry is not None else None
        described.append(
            expected is not None
            and (expected.dtype, tuple(expected.shape)) == (tensor.dtype, tensor.shape)
        )
    if [t.name for t in header.tensors] != names or not all(described):
        raise CorruptDeltaError(
            f"the stored header of {layout.name} disagrees with the manifest; it is corrupt"
        )
    return header


def write_weight_file(
    path: Path, header: SafetensorsHeader, write_tensor: Callable[[str, BinaryIO], None]
) -> None:
    """Write a complete safetensors file, fsynced; ``write_tensor(name, f)`` writes each
    tensor's bytes, in the header's data order."""
    with path.open("xb") as f:
        f.write(struct.pack("<Q", len(header.raw)))
        f.write(header.raw)
        for tensor in header.tensors:
            write_tensor(tensor.name, f)
        f.flush()
        os.fsync(f.fileno())
