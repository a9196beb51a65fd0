"""A summary of a delta directory for people and scripts (``deltaroll inspect``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from deltaroll.checkpoint.manifest import MANIFEST_NAME, read_delta_manifest

_TOP_TENSORS = 10


def describe_delta(delta_dir: Path) -> dict[str, Any]:
    """Versions, per-kind tensor counts, element counts, bytes, and the most-changed tensors."""
    manifest = read_delta_manifest(Path(delta_dir))
    target = [e for e in manifest.tensors if e.target is not None]
    total = sum(e.total_elements for e in target)
    changed = sum(e.changed_elements for e in manifest.tensors)
    target_bytes = sum(f.header_size + 8 for f in manifest.target_layout.files)
    target_bytes += sum(e.target.nbytes for e in target if e.target is not None)
    target_bytes += sum(a.size for a in manifest.target_layout.aux_files)
    delta_bytes = manifest.delta_bytes() + (Path(delta_dir) / MANIFEST_NAME).stat().st_size
    top = sorted(manifest.tensors, key=lambda e: e.changed_elements, reverse=True)[:_TOP_TENSORS]
    return {
        "schema": manifest.schema_,
        "base_version": manifest.base_version,
        "target_version": manifest.target_version,
        "anchor": manifest.base_version is None,
        "tensors": len(target),
        "kinds": dict(Counter(e.kind for e in manifest.tensors)),
        "added": sorted(e.name for e in manifest.tensors if e.base is None),
        "removed": sorted(e.name for e in manifest.tensors if e.target is None),
        "total_elements": total,
        "changed_elements": changed,
        "changed_fraction": changed / total if total else 0.0,
        "objects": len(manifest.objects),
        "delta_bytes": delta_bytes,
        "target_bytes": target_bytes,
        "target_files": [f.name for f in manifest.target_layout.files],
        "most_changed": [
            {
                "name": e.name,
                "kind": e.kind,
                "changed": e.changed_elements,
                "total": e.total_elements,
            }
            for e in top
            if e.changed_elements
        ],
    }
