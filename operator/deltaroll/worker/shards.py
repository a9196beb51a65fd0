"""``worker compute --shards N``: one delta computed by the N indexes of an Indexed Job.

Each index (``JOB_COMPLETION_INDEX``) diffs a share of the checkpoint's weight files, chosen the
same way by every index (largest files first, each to the least-loaded share), uploads its
share's objects to the store, and records its share's manifest under a staging key
(:mod:`deltaroll.store.staging`). The index that finds every share recorded assembles the full
delta manifest and publishes the version; the last index to finish always does, and two doing it
at once publish the same bytes (publishing is conditional). It then discards the staged parts,
last, so that a crash before the name is set leaves them for the retry; a part left behind (a
failed delete, an index retried after publication) is removed by ``deltaroll gc``.

The assembled manifest is byte-identical to a single worker's: per-tensor entries do not depend
on each other, the tensor order and both layouts are rebuilt from the full checkpoints, so the
version id is the same whatever N.

Sharding needs each tensor present on both sides to live in the same file name on both sides
(the usual case between checkpoints of one run); otherwise index 0 diffs everything alone.

This uses the checkpoint layer's building blocks (``write_delta``, ``record_layout``,
``DeltaManifest``, ``write_manifest``); once that layer offers a share/assemble pair of its own,
this module shrinks to the store protocol. A test asserts the assembled manifest equals
``diff_checkpoints``' byte for byte, so any drift between the two paths is caught.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from deltaroll.api.job_result import JOB_ENV
from deltaroll.checkpoint import (
    Checkpoint,
    DeltaManifest,
    open_checkpoint,
    read_delta_manifest,
    side_version,
)
from deltaroll.checkpoint.diff import write_delta
from deltaroll.checkpoint.layouts import record_layout
from deltaroll.checkpoint.manifest import MANIFEST_NAME, SCHEMA, ObjectRef, write_manifest
from deltaroll.checkpoint.manifest_tensors import TensorTable
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.packs import PackWriter
from deltaroll.checkpoint.staging import staged_directory
from deltaroll.store import StoreError
from deltaroll.store.manifests import ObjectRef as StoreObjectRef
from deltaroll.store.staging import (
    EMPTY_SHARE,
    discard_group,
    read_part,
    record_job,
    record_part,
)
from deltaroll.store.transfer import download_objects, upload_objects
from deltaroll.worker.compute import Publication, diff_device, finish_version, publish_anchor
from deltaroll.worker.errors import ShareMismatchError
from deltaroll.worker.parent import fetch_parent
from deltaroll.worker.sources import fetch_source

if TYPE_CHECKING:
    from deltaroll.store import Store

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ShareOutcome:
    """What one index did: its share, and the version if this index published it."""

    index: int
    shares: int
    files: list[str]
    published: Publication | None


def assign_files(checkpoint: Checkpoint, shares: int) -> list[list[str]]:
    """Weight file names per share: largest first, each to the least-loaded share."""
    loads = [0] * shares
    assigned: list[list[str]] = [[] for _ in range(shares)]
    by_size = sorted(checkpoint.weight_files, key=lambda w: (-w.header.file_size, w.name))
    for weight in by_size:
        lightest = loads.index(min(loads))
        assigned[lightest].append(weight.name)
        loads[lightest] += weight.header.file_size
    return [sorted(names) for names in assigned]


def shardable(base: Checkpoint, target: Checkpoint) -> bool:
    """Whether every tensor on both sides sits in the same file name on both sides."""
    return (
        all(
            base.tensors[name].file == ref.file
            for name, ref in target.tensors.items()
            if name in base.tensors
        )
        and base.kind == target.kind == "directory"
    )


def share_of(checkpoint: Checkpoint, files: Sequence[str], *, with_aux: bool) -> Checkpoint:
    """The part of ``checkpoint`` in ``files``; the auxiliary files go with one share (the
    first), so the shares together name every file the version id covers."""
    wanted = set(files)
    return dataclasses.replace(
        checkpoint,
        weight_files=tuple(w for w in checkpoint.weight_files if w.name in wanted),
        aux_files=checkpoint.aux_files if with_aux else {},
        tensors={n: r for n, r in checkpoint.tensors.items() if r.file in wanted},
    )


def compute_share(
    store: Store,
    model: str,
    *,
    target_uri: str,
    parent: str,
    name: str | None,
    anchor: bool,
    index: int,
    shares: int,
    level: int,
    work_dir: Path,
    parent_cache: Path | None = None,
) -> ShareOutcome:
    """Diff this index's share, record it, and publish the version if every share is in (then
    also its anchor when asked, and its name)."""
    target_path = fetch_source(target_uri, work_dir)
    parent_id, parent_path = fetch_parent(store, model, parent, work_dir, parent_cache)
    base, target = open_checkpoint(parent_path), open_checkpoint(target_path)
    plan = (
        assign_files(target, shares)
        if shardable(base, target)
        else [[w.name for w in target.weight_files]] + [[] for _ in range(shares - 1)]
    )
    files = plan[index]
    group = _group_id(model, parent_id, target_uri, level, shares)
    if files:
        share_dir = work_dir / "share"
        write_delta(
            share_of(base, files, with_aux=index == 0),
            share_of(target, files, with_aux=index == 0),
            share_dir,
            level=level,
            device=diff_device(),
        )
        share = read_delta_manifest(share_dir)
        upload_objects(
            store.catalog.backend,
            model,
            share_dir / "objects",
            [StoreObjectRef(digest=o.digest, size=o.size) for o in share.objects],
            policy=store.catalog.policy,
        )
        part = (share_dir / MANIFEST_NAME).read_bytes()
    else:
        part = EMPTY_SHARE  # recorded so the others know this index is done
    job = os.environ.get(JOB_ENV)
    if job:  # the operator's Job: gc keeps the group's parts while it exists
        record_job(store.catalog, model, group, job)
    record_part(store.catalog, model, group, index, shares, part)
    log.info("worker.share_recorded", index=index, shares=shares, files=files)
    parts = _collect_parts(store, model, group, shares, work_dir / "parts")
    if parts is None:
        return ShareOutcome(index, shares, files, None)
    delta_dir = work_dir / "delta"
    assemble(base, target, parts, delta_dir, store=store, model=model, level=level)
    created = store.publish(model, delta_dir).published
    version = read_delta_manifest(delta_dir).target_version
    if anchor:
        publish_anchor(store, model, target_path, work_dir / "anchor", level)
    publication = finish_version(store, model, version, name, created=created)
    _discard_parts(store, model, group, shares)
    return ShareOutcome(index, shares, files, publication)


def assemble(
    base: Checkpoint,
    target: Checkpoint,
    parts: Sequence[DeltaManifest],
    out_dir: Path,
    *,
    store: Store,
    model: str,
    level: int,
) -> None:
    """Write the whole delta directory from the shares' manifests (objects from the store)."""
    # Each share's blobs point into its own objects: listed one share after the other, a blob
    # keeps its place once shifted by the objects listed before its share.
    part_objects: list[ObjectRef] = []
    entries = {}
    for part in parts:
        entries.update({entry.name: entry.shifted(len(part_objects)) for entry in part.tensors})
        part_objects += part.objects
    names = list(target.tensors) + [n for n in base.tensors if n not in target.tensors]
    if sorted(names) != sorted(entries):
        missing = sorted(set(names) ^ set(entries))[:3]
        raise ShareMismatchError(
            f"the recorded shares do not cover the checkpoint exactly (e.g. {missing}): the "
            "target changed between indexes; recreate the ModelDelta's Job"
        )
    download_objects(
        store.catalog.backend,
        model,
        [StoreObjectRef(digest=o.digest, size=o.size) for o in part_objects],
        store.cache,
        policy=store.catalog.policy,
    )
    ordered = TensorTable.from_entries(entries[name] for name in names)
    with staged_directory(out_dir) as staging:
        objects = ObjectDir(staging)
        objects.root.mkdir(parents=True, exist_ok=True)
        try:
            for ref in part_objects:
                store.cache.link_into(ref.digest, objects.path(ref.digest))
        finally:
            store.cache.release(ref.digest for ref in part_objects)
        packs = PackWriter(objects, first_index=len(part_objects))
        rows = {name: row for row, name in enumerate(names)}
        base_layout = record_layout(base, packs, rows, level=level)
        target_layout = record_layout(target, packs, rows, level=level)
        manifest = DeltaManifest(
            schema=SCHEMA,
            base_version=side_version(ordered, "base", base_layout),
            target_version=side_version(ordered, "target", target_layout),
            base_layout=base_layout,
            target_layout=target_layout,
            tensors=ordered.columns,
            objects=part_objects + packs.finish(),
            level=level,
        )
        write_manifest(staging, manifest)


def _collect_parts(
    store: Store, model: str, group: str, shares: int, into: Path
) -> list[DeltaManifest] | None:
    """Every share's manifest (integrity-checked), or None while some index is not done."""
    parts = []
    for index in range(shares):
        data = read_part(store.catalog, model, group, index, shares)
        if data is None:
            return None
        if data == EMPTY_SHARE:
            continue
        part_dir = into / str(index)
        part_dir.mkdir(parents=True, exist_ok=True)
        (part_dir / MANIFEST_NAME).write_bytes(data)
        parts.append(read_delta_manifest(part_dir))
    return parts


def _group_id(model: str, parent_id: str, target_uri: str, level: int, shares: int) -> str:
    """The same for every index (and every retry) of one sharded computation."""
    identity = json.dumps([model, parent_id, target_uri, level, shares])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _discard_parts(store: Store, model: str, group: str, shares: int) -> None:
    """Remove the group's staged parts; the version is published, so a failure only leaves
    them for ``deltaroll gc`` (which removes a published group's parts) and is logged."""
    try:
        discard_group(store.catalog, model, group, shares)
    except StoreError as exc:
        log.warning(
            "worker.staging_not_discarded", model=model, group=group, shares=shares, error=str(exc)
        )
