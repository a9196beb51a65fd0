"""Writing one safetensors file of a layout: its exact header, then its tensors in data order."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.header import SafetensorsHeader, parse_header
from deltaroll.checkpoint.manifest import TensorEntry, WeightFileLayout
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.transform import Side


def layout_header(
    layout: WeightFileLayout, objects: PackReader, entries: dict[str, TensorEntry], side: Side
) -> SafetensorsHeader:
    """The stored header of ``layout``, checked against the manifest's tensors on ``side``."""
    header = parse_header(objects.read(layout.header), source=f"the header of {layout.name}")
    described = []
    for tensor in header.tensors:
        entry = entries.get(tensor.name)
        expected = entry.side(side) if entry is not None else None
        described.append(
            expected is not None
            and (expected.dtype, tuple(expected.shape)) == (tensor.dtype, tensor.shape)
        )
    if [t.name for t in header.tensors] != layout.tensors or not all(described):
        raise CorruptDeltaError(
            f"the stored header of {layout.name} disagrees with the manifest; it is corrupt"
        )
    return header


def write_weight_file(
    path: Path, header: SafetensorsHeader, tensor_bits: Callable[[str], np.ndarray]
) -> None:
    """Write a complete safetensors file, fsynced; ``tensor_bits`` yields each tensor's bits."""
    with path.open("xb") as f:
        f.write(struct.pack("<Q", len(header.raw)))
        f.write(header.raw)
        for tensor in header.tensors:
            f.write(byte_view(tensor_bits(tensor.name)))
        f.flush()
        os.fsync(f.fileno())
