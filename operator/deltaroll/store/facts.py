"""A published version's facts (:class:`~deltaroll.api.facts.VersionFacts`), read back from
the store's manifests: what the worker reports and the controller writes into status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deltaroll.api.facts import VersionFacts
from deltaroll.checkpoint import DeltaManifest
from deltaroll.store import keys

if TYPE_CHECKING:
    from deltaroll.store import Store
    from deltaroll.store.manifests import DeltaRecord


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
