"""The parent version as a local checkpoint: pulled from the store, or found in a local cache.

A cache directory (``--parent-cache``, e.g. a node-local volume shared by successive Jobs) keeps
``<cache>/<model>/<version-id>/``; an entry is used only if its content really is that version
(its checksums are recomputed), so a damaged or half-copied cache costs a pull, never a wrong
delta. Pulls land under a temporary name and are renamed into place, so two Jobs filling the same
cache entry at once both end with a complete copy.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from deltaroll.checkpoint import checkpoint_version
from deltaroll.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    from deltaroll.store import Store

log = structlog.get_logger(__name__)


def fetch_parent(
    store: Store, model: str, ref: str, work_dir: Path, cache_dir: Path | None = None
) -> tuple[str, Path]:
    """(version id, local checkpoint directory) of the parent ``ref`` (a name or an id)."""
    version = store.resolve(model, ref)
    if cache_dir is None:
        destination = work_dir / "parent"
        store.pull(model, version, destination)
        return version, destination
    destination = cache_dir / model / version
    if destination.is_dir() and _is_version(destination, version):
        log.info("worker.parent_cached", model=model, version=version)
        return version, destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        _discard(destination)
    try:
        store.pull(model, version, destination)
    except OSError:
        if not (destination.is_dir() and _is_version(destination, version)):
            raise  # not a concurrent Job that filled the entry first: a real failure
    return version, destination


def _discard(entry: Path) -> None:
    """Move a damaged cache entry out of the way (a rename, so a concurrent reader of the name
    never sees it half-deleted), then delete it."""
    aside = entry.with_name(f".{entry.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        entry.rename(aside)
    except FileNotFoundError:
        return  # another Job discarded it first
    log.warning("worker.parent_cache_discarded", path=str(entry))
    shutil.rmtree(aside, ignore_errors=True)


def _is_version(path: Path, version: str) -> bool:
    try:
        return checkpoint_version(path) == version
    except CheckpointError:
        return False
