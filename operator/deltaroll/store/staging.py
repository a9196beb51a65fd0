"""Staged shares of sharded computations: recording them, and which of them gc may remove.

The indexes of one sharded computation (an Indexed Job; a *group*, named by a digest of its
inputs) each record their share of the delta under
``<model>/staging/<group>/part-<index>-of-<shares>.json``: the checkpoint layer's manifest of
that share, or ``{}`` for an empty share. The index that finds every part assembles the version,
publishes it, and then discards the group.

A group's key names no version: the version is known only once every share is diffed. The link
is the parts' content: the target sides of a complete group's tensor entries give the version id
exactly as the assembled manifest does (:func:`side_version`). So gc calls a group *published*
only when all its parts are present and that version is published. A lone part (an index retried
after its group was published and discarded) proves nothing and, like any group that may still
be running, is kept until the group's newest part is older than the grace period. While a group
is kept, the objects its parts list count as referenced, so gc never collects the uploads of a
group that is still assembling, however long ago they were made.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import structlog

from deltaroll.checkpoint import DeltaManifest, side_version
from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest import CheckpointLayout, parse_delta_manifest
from deltaroll.store import keys
from deltaroll.store.backends import ObjectInfo
from deltaroll.store.backends.concurrency import run_all
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import ObjectNotFoundError

log = structlog.get_logger(__name__)
EMPTY_SHARE = b"{}"


def record_part(
    catalog: Catalog, model: str, group: str, index: int, shares: int, part: bytes
) -> None:
    """Record (or re-record, on a retry) one index's share: its manifest or :data:`EMPTY_SHARE`."""
    key = keys.staging_part_key(model, group, index, shares)
    catalog.write_bytes(key, part, create_only=False)


def read_part(catalog: Catalog, model: str, group: str, index: int, shares: int) -> bytes | None:
    """One index's recorded share, or None while that index has not recorded it."""
    try:
        return catalog.read_bytes(keys.staging_part_key(model, group, index, shares))
    except ObjectNotFoundError:
        return None


def discard_group(catalog: Catalog, model: str, group: str, shares: int) -> None:
    """Delete a group's parts (once its version is published they are no longer needed)."""
    catalog.delete([keys.staging_part_key(model, group, i, shares) for i in range(shares)])


@dataclass(frozen=True)
class StagingReview:
    """gc's verdict on a model's staged parts."""

    stale: list[ObjectInfo]  # parts of published groups, and of groups idle past the grace
    referenced: set[str]  # digests of the objects that the kept parts list


@dataclass(frozen=True)
class _Part:
    info: ObjectInfo
    index: int
    shares: int


def review_staging(
    catalog: Catalog, model: str, published: Collection[str], cutoff: datetime
) -> StagingReview:
    """Which staged parts of ``model`` are stale, given the published version ids and the
    grace cutoff (parts written after it are recent), and which objects the others need."""
    prefix = keys.staging_prefix(model)
    groups: dict[str, list[_Part]] = defaultdict(list)
    for info in catalog.list_keys(prefix):
        parsed = keys.staging_part(info.key, prefix)
        if parsed is not None:
            group, index, count = parsed
            groups[group].append(_Part(info, index, count))
    stale: list[ObjectInfo] = []
    referenced: set[str] = set()
    for group, parts in sorted(groups.items()):
        recorded = _read_shares(catalog, parts)
        if _is_published(parts, recorded, published) or _is_idle(parts, cutoff):
            stale.extend(part.info for part in parts)
        else:
            referenced.update(o.digest for s in recorded.values() if s for o in s.objects)
            log.info("store.staging_kept", model=model, group=group, parts=len(parts))
    return StagingReview(stale=stale, referenced=referenced)


def _read_shares(catalog: Catalog, parts: list[_Part]) -> dict[int, DeltaManifest | None]:
    """Each readable part's share by index (None: an empty share). Parts deleted since the
    listing, and parts that are not a share manifest, are left out."""
    shares: dict[int, DeltaManifest | None] = {}

    def read_one(part: _Part) -> None:
        try:
            data = catalog.read_bytes(part.info.key)
        except ObjectNotFoundError:
            return
        if data == EMPTY_SHARE:
            shares[part.index] = None
            return
        try:
            shares[part.index] = parse_delta_manifest(data, part.info.key)
        except CorruptDeltaError:
            log.warning("store.staging_unreadable", key=part.info.key)

    run_all(read_one, parts)
    return shares


def _is_published(
    parts: list[_Part], shares: dict[int, DeltaManifest | None], published: Collection[str]
) -> bool:
    """Whether every part of the group is here and together they make a published version."""
    counts = {part.shares for part in parts}
    if len(counts) != 1 or set(shares) != set(range(counts.pop())):
        return False
    entries = [entry for share in shares.values() if share for entry in share.tensors]
    if not entries or len({entry.name for entry in entries}) != len(entries):
        return False
    files = [aux for share in shares.values() if share for aux in share.target_layout.aux_files]
    layout = CheckpointLayout(kind="directory", files=[], aux_files=files)
    return side_version(entries, "target", layout) in published


def _is_idle(parts: list[_Part], cutoff: datetime) -> bool:
    """Whether no part of the group was written within the grace period (an unknown time
    counts as old, as for objects)."""
    return all(part.info.modified is None or part.info.modified <= cutoff for part in parts)
