"""Applying a delta into a new directory (``apply -o``): the full other side, in its layout.

Everything is written under a temp name and renamed at the end, so a failure at any point
(corrupt object, wrong base, full disk) leaves no output directory behind. A single-file layout
is written as that one file inside the output directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest import DeltaManifest
from deltaroll.checkpoint.materialize import write_to_side
from deltaroll.checkpoint.names import child_path
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import Checkpoint
from deltaroll.checkpoint.staging import staged_directory
from deltaroll.checkpoint.transform import (
    OnBytes,
    Side,
    aux_file_bytes,
    other,
)
from deltaroll.checkpoint.writer import layout_header, write_weight_file


def apply_to_directory(
    manifest: DeltaManifest,
    objects: PackReader,
    source: Checkpoint | None,
    out_dir: Path,
    from_side: Side,
    on_bytes: OnBytes | None = None,
) -> None:
    """Write the ``other(from_side)`` checkpoint of ``manifest`` to ``out_dir``."""
    to_side = other(from_side)
    layout = manifest.layout(to_side)
    if layout is None:
        raise CorruptDeltaError("the delta has no layout for the side it should produce")
    entries = {e.name: e for e in manifest.tensors}

    def write_tensor(name: str, out: BinaryIO) -> None:
        write_to_side(entries[name], source, objects, from_side, out, on_bytes)

    with staged_directory(out_dir) as staging:
        for file in layout.files:
            header = layout_header(file, manifest.names_in(file), objects, entries, to_side)
            write_weight_file(child_path(staging, file.name), header, write_tensor)
        for aux in layout.aux_files:
            data = aux_file_bytes(aux, objects)
            path = child_path(staging, aux.name)
            with path.open("xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # durable before the directory is renamed into place
