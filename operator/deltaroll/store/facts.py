"""A published version's facts (:class:`~deltaroll.api.facts.VersionFacts`), read back from
the store's manifests: what the worker reports and the controller writes into status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from deltaroll.api.facts import VersionFacts
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
    return VersionFacts(
        version=version,
        parent=manifest.parent,
        changed_fraction=changed_fraction(manifest.delta) if manifest.delta else None,
        delta_bytes=record.total_bytes if record is not None else 0,
        full_bytes=record.full_bytes if record is not None else None,
        anchored=anchor is not None,
        published_at=_utc(manifest.created_at).isoformat(),
    )


def changed_fraction(delta: DeltaRecord) -> float:
    """Changed elements over the target's elements (1.0 at most: a resized tensor counts once)."""
    total, changed = delta.total_elements, delta.changed_elements
    return min(1.0, changed / total) if total else 0.0


def _has_anchor(store: Store, model: str, version: str) -> bool:
    key = keys.anchor_key(model, version)
    return bool(store.catalog.backend.existing([key]))


def _utc(moment: datetime) -> datetime:
    """A manifest's time with its zone; one written without (by hand) counts as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
