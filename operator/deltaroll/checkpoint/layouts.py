"""Recording a checkpoint's layout (files, exact headers, auxiliary files) into a delta."""

from __future__ import annotations

from collections.abc import Mapping

from deltaroll.checkpoint.chunks import put_chunks
from deltaroll.checkpoint.digests import tensor_digest
from deltaroll.checkpoint.manifest import AuxFile, CheckpointLayout, WeightFileLayout
from deltaroll.checkpoint.packs import PackWriter
from deltaroll.checkpoint.reader import Checkpoint


def record_layout(
    checkpoint: Checkpoint, packs: PackWriter, rows: Mapping[str, int], *, level: int
) -> CheckpointLayout:
    """Store every header and auxiliary file as blobs and describe the layout; ``rows`` maps
    each tensor's name to its row in the manifest's tensor columns."""
    files = [
        WeightFileLayout(
            name=weight.name,
            header=packs.add(weight.header.raw),
            header_digest=tensor_digest(weight.header.raw),
            rows=[rows[t.name] for t in weight.header.tensors],
            metadata=weight.header.metadata,
        )
        for weight in checkpoint.weight_files
    ]
    aux_files = []
    for name, path in checkpoint.aux_files.items():
        data = path.read_bytes()
        aux_files.append(
            AuxFile(
                name=name,
                size=len(data),
                digest=tensor_digest(data),
                chunks=put_chunks(packs, data, level=level),
            )
        )
    return CheckpointLayout(kind=checkpoint.kind, files=files, aux_files=aux_files)
