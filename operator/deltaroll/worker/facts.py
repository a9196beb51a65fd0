"""What a published version is, read back from the store: the numbers a ModelDelta reports.

The worker writes these into its termination message and the controller into status; both read
them from the store's manifests rather than from the worker's own counters, so the status shows
exactly what ``deltaroll log`` shows (``delta_bytes`` is the same sum of object sizes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from deltaroll.checkpoint import DeltaManifest
from deltaroll.store import keys

if TYPE_CHECKING:
    from deltaroll.store import Store
    from deltaroll.store.manifests import DeltaRecord


@dataclass(frozen=True)
class VersionFacts:
    """A published version: its parent and the size of what a puller downloads."""

    version: str
    parent: str | None
    changed_fraction: float | None  # of the target's elements that differ; None for a root
    delta_bytes: int  # the delta from the parent (a root: its anchor), as `deltaroll log` counts
    full_bytes: int | None  # the checkpoint's files on disk; None when no manifest describes it
    anchored: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_facts(store: Store, model: str, version: str) -> VersionFacts:
    """Facts of ``version`` (an id) of ``model``; the store's errors if it is not published."""
    manifest = store.catalog.read_version(model, version)
    anchor = (
        store.catalog.read_anchor(model, version) if _has_anchor(store, model, version) else None
    )
    record = manifest.delta or (anchor.delta if anchor is not None else None)
    delta = _parse(record) if record is not None else None
    return VersionFacts(
        version=version,
        parent=manifest.parent,
        changed_fraction=changed_fraction(delta) if delta and manifest.delta else None,
        delta_bytes=record.total_bytes if record is not None else 0,
        full_bytes=full_bytes(delta) if delta is not None else None,
        anchored=anchor is not None,
    )


def changed_fraction(delta: DeltaManifest) -> float:
    """Changed elements over the target's elements (1.0 at most: a resized tensor counts once)."""
    total = sum(entry.total_elements for entry in delta.tensors if entry.target is not None)
    changed = sum(entry.changed_elements for entry in delta.tensors if entry.target is not None)
    return min(1.0, changed / total) if total else 0.0


def full_bytes(delta: DeltaManifest) -> int:
    """Bytes of the target checkpoint's files: headers, tensor data and auxiliary files."""
    sizes = {entry.name: entry.target.nbytes for entry in delta.tensors if entry.target}
    layout = delta.target_layout
    weights = sum(8 + f.header_size + sum(sizes[t] for t in f.tensors) for f in layout.files)
    return weights + sum(aux.size for aux in layout.aux_files)


def _parse(record: DeltaRecord) -> DeltaManifest:
    return DeltaManifest.model_validate_json(record.manifest_json)


def _has_anchor(store: Store, model: str, version: str) -> bool:
    key = keys.anchor_key(model, version)
    return bool(store.catalog.backend.existing([key]))
