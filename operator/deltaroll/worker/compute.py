"""``worker compute`` and ``worker import``: make a new version and publish it.

Both end the same way: the delta directory is published (objects first, the version manifest
last, conditionally), then the human name is pointed at it. A retried Job therefore finds its
own earlier work in the store and finishes without uploading it again; a name already pointing
at different weights is refused, never moved.

Diffs run on the GPU when the Job has one (:func:`diff_device`) and on the CPU otherwise; the
bytes, and so the version, are the same either way (the codec guarantees it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from deltaroll.api.facts import VersionFacts
from deltaroll.checkpoint import diff_checkpoints, import_trl_patch
from deltaroll.store.facts import version_facts
from deltaroll.worker.parent import fetch_parent
from deltaroll.worker.sources import fetch_source

if TYPE_CHECKING:
    from deltaroll.store import Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Publication:
    """A version a worker published: its facts, and whether this run's publish wrote its
    manifest (``store.publish``'s own answer: False when it was in the store already)."""

    facts: VersionFacts
    created: bool


def compute_version(
    store: Store,
    model: str,
    *,
    target_uri: str,
    parent: str | None,
    name: str | None,
    anchor: bool,
    level: int,
    work_dir: Path,
    parent_cache: Path | None = None,
) -> Publication:
    """Diff the target against ``parent`` (None: publish an anchor) and publish the result."""
    target = fetch_source(target_uri, work_dir)
    if parent is None:
        version, created = publish_anchor(store, model, target, work_dir / "anchor", level)
    else:
        _, parent_path = fetch_parent(store, model, parent, work_dir, parent_cache)
        summary = diff_checkpoints(
            parent_path, target, work_dir / "delta", level=level, device=diff_device()
        )
        created = store.publish(model, work_dir / "delta").published
        version = summary.target_version
        if anchor:
            publish_anchor(store, model, target, work_dir / "anchor", level)
    return finish_version(store, model, version, name, created=created)


def import_version(
    store: Store,
    model: str,
    *,
    patch_uri: str,
    parent: str,
    name: str | None,
    anchor: bool,
    level: int,
    work_dir: Path,
    parent_cache: Path | None = None,
) -> Publication:
    """Apply a TRL sparse patch to ``parent`` as a new version and publish it."""
    patch = fetch_source(patch_uri, work_dir)
    _, parent_path = fetch_parent(store, model, parent, work_dir, parent_cache)
    summary = import_trl_patch(parent_path, patch, work_dir / "delta", level=level)
    created = store.publish(model, work_dir / "delta").published
    if anchor:
        patched = work_dir / "patched"
        store.pull(model, summary.target_version, patched, base=parent_path)
        publish_anchor(store, model, patched, work_dir / "anchor", level)
    return finish_version(store, model, summary.target_version, name, created=created)


def diff_device() -> str | None:
    """``"cuda"`` when this process sees a GPU, else None (numpy on the CPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else None
    log.info("worker.diff_device", device=device or "cpu")
    return device


def publish_anchor(
    store: Store, model: str, checkpoint: Path, out: Path, level: int
) -> tuple[str, bool]:
    """Publish a full snapshot of ``checkpoint``; its version id and whether this call wrote it."""
    summary = diff_checkpoints(None, checkpoint, out, level=level)
    return summary.target_version, store.publish(model, out).published


def finish_version(
    store: Store, model: str, version: str, name: str | None, *, created: bool
) -> Publication:
    """Point ``name`` at the published ``version``; the version's facts from the store."""
    if name is not None:
        store.set_name(model, name, version)
    facts = version_facts(store, model, version)
    log.info(
        "worker.published",
        model=model, version=version, name=name, parent=facts.parent, created=created,
    )  # fmt: skip
    return Publication(facts, created)
