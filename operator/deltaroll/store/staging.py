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
be running, is kept until the group's newest part is older than the grace period; or, when its
Job recorded itself (``job.json``) and gc is told which Jobs exist, for as long as that Job
does. While a group is kept, the objects its parts list count as referenced, so gc never
collects the uploads of a group that is still assembling, however long ago they were made.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping
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


def record_job(catalog: Catalog, model: str, group: str, job: str) -> None:
    """Record which Job (``namespace/name``) computes the group, so gc keeps the group's parts
    while that Job exists, however long it runs."""
    key = keys.staging_job_key(model, group)
    catalog.write_bytes(key, json.dumps({"job": job}).encode(), create_only=False)


def read_part(catalog: Catalog, model: str, group: str, index: int, shares: int) -> bytes | None:
    """One index's recorded share, or None while that index has not recorded it."""
    try:
        return catalog.read_bytes(keys.staging_part_key(model, group, index, shares))
    except ObjectNotFoundError:
        return None


def discard_group(catalog: Catalog, model: str, group: str, shares: int) -> None:
    """Delete a group's parts (once its version is published they are no longer needed)."""
    parts = [keys.staging_part_key(model, group, i, shares) for i in range(shares)]
    catalog.delete([*parts, keys.staging_job_key(model, group)])


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
    catalog: Catalog,
    model: str,
    published: Collection[str],
    cutoff: datetime,
    live_jobs: Mapping[str, Collection[str]] | None = None,
) -> StagingReview:
    """Which staged parts of ``model`` are stale, given the published version ids and the
    grace cutoff (parts written after it are recent), and which objects the others need.

    A group that recorded its Job is stale, unpublished, only once that Job is gone: when
    ``live_jobs`` (namespace -> the Jobs that exist there) covers its namespace and lacks it.
    Otherwise (no record, or a namespace the caller did not look at) idleness decides."""
    prefix = keys.staging_prefix(model)
    groups: dict[str, list[_Part]] = defaultdict(list)
    jobs: dict[str, ObjectInfo] = {}
    for info in catalog.list_keys(prefix):
        parsed = keys.staging_part(info.key, prefix)
        if parsed is not None:
            group, index, count = parsed
            groups[group].append(_Part(info, index, count))
        elif info.key.endswith("/job.json"):
            jobs[info.key[len(prefix) :].split("/")[0]] = info
    stale: list[ObjectInfo] = []
    referenced: set[str] = set()
    for group, parts in sorted(groups.items()):
        recorded = _read_shares(catalog, parts)
        job = _job_of(catalog, jobs.get(group))
        if _is_published(parts, recorded, published) or _is_abandoned(
            parts, cutoff, job, live_jobs
        ):
            stale.extend(part.info for part in parts)
            stale.extend([jobs[group]] if group in jobs else [])
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


def _job_of(catalog: Catalog, info: ObjectInfo | None) -> tuple[str, str] | None:
    """(namespace, name) of a group's recorded Job, None when there is no readable record."""
    if info is None:
        return None
    try:
        job = json.loads(catalog.read_bytes(info.key))["job"]
        namespace, name = job.split("/")
    except (ObjectNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return namespace, name


def _is_abandoned(
    parts: list[_Part],
    cutoff: datetime,
    job: tuple[str, str] | None,
    live_jobs: Mapping[str, Collection[str]] | None,
) -> bool:
    """Whether nothing will finish the group: its Job is known to be gone, or (no Job known)
    it has been idle past the grace period."""
    if job is not None and live_jobs is not None and job[0] in live_jobs:
        return job[1] not in live_jobs[job[0]]
    return _is_idle(parts, cutoff)


def _is_idle(parts: list[_Part], cutoff: datetime) -> bool:
    """Whether no part of the group was written within the grace period (an unknown time
    counts as old, as for objects)."""
    return all(part.info.modified is None or part.info.modified <= cutoff for part in parts)
