"""``worker materialize`` and ``worker squash``: reshape how an existing version is stored.

Neither creates a version: materialize adds a full snapshot (an anchor) so pods far behind start
from it; squash gives a version a direct delta from an older one so pods at FROM need one
download. Both are safe to repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deltaroll.api.facts import VersionFacts
from deltaroll.store.facts import version_facts
from deltaroll.worker.compute import publish_anchor

if TYPE_CHECKING:
    from deltaroll.store import Store
    from deltaroll.store.squash import SquashResult


def materialize_version(
    store: Store, model: str, ref: str, *, level: int, work_dir: Path
) -> VersionFacts:
    """Publish an anchor of ``ref``: pull it, then store it whole."""
    version = store.resolve(model, ref)
    checkpoint = work_dir / "checkpoint"
    store.pull(model, version, checkpoint)
    publish_anchor(store, model, checkpoint, work_dir / "anchor", level)
    return version_facts(store, model, version)


def squash_versions(store: Store, model: str, from_ref: str, to_ref: str) -> SquashResult:
    """Replace TO's delta by one from FROM (see :mod:`deltaroll.store.squash`)."""
    return store.squash(model, from_ref, to_ref)
