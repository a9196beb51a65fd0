"""``gc``: delete what is not needed to rebuild the versions a user keeps.

For each kept version, its parent chain is kept up to the nearest anchor, with that anchor, so
every kept version can still be rebuilt from nothing. Everything else goes: versions (and the
names pointing at them), anchors, and objects no remaining manifest refers to. A kept version
whose parent is deleted (it has its own anchor) is rewritten as a root, so no manifest is left
pointing at deleted objects. Staged parts of sharded computations go once their group is
published or has been idle for the grace period (:mod:`deltaroll.store.staging`).

gc runs under a gc lease (:mod:`deltaroll.store.leases`): it starts only when no publish is in
its last step, and no publish takes that step until gc is done, so an object or a parent that a
publish reuses is either referenced by the graph gc reads, or checked (and sent again) by the
publish after gc. The graph is read under the lease, and the keep-set resolved against it.
Staged parts of a group are kept while its Job exists, when the caller says which Jobs do.

Order is chosen so readers never see a broken version: names, then signature records of the
versions it deletes (and any whose version is gone), then version manifests, then anchors,
then staged parts, then objects. Objects younger than the grace period are never
deleted, because a push in progress uploads its objects before its manifest makes them
referenced; nor are objects that a kept staged part lists, because a sharded computation uploads
its shares' objects long before its version manifest refers to them."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from deltaroll.store import keys
from deltaroll.store.aliases import resolve
from deltaroll.store.catalog import Catalog
from deltaroll.store.leases import Lease, collecting
from deltaroll.store.manifests import VersionManifest, now
from deltaroll.store.pull import load_graph
from deltaroll.store.staging import review_staging

log = structlog.get_logger(__name__)
DEFAULT_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class GcResult:
    kept_versions: list[str]
    deleted_versions: list[str]
    deleted_anchors: list[str]
    deleted_names: list[str]
    deleted_staging_parts: int
    deleted_objects: int
    freed_bytes: int
    dry_run: bool
    rerooted: list[str] = field(default_factory=list)


def gc(
    catalog: Catalog,
    model: str,
    keep: list[str] | None,
    *,
    drop: Collection[str] = (),
    dry_run: bool = False,
    grace: timedelta = DEFAULT_GRACE,
    live_jobs: Mapping[str, Collection[str]] | None = None,
) -> GcResult:
    """Delete everything of ``model`` that the versions in ``keep`` (ids or names) don't need;
    ``keep=None``: every version but the ids in ``drop``, read under the lease, so a version
    published meanwhile is never taken for one to delete. ``live_jobs`` (namespace -> names of
    the Jobs that exist there): a staging group whose Job is one of them is kept."""
    with collecting(catalog, model) as lease:
        return _collect(catalog, model, keep, drop, dry_run, grace, live_jobs, lease)


def _collect(
    catalog: Catalog,
    model: str,
    keep: list[str] | None,
    drop: Collection[str],
    dry_run: bool,
    grace: timedelta,
    live_jobs: Mapping[str, Collection[str]] | None,
    lease: Lease,
) -> GcResult:
    graph = load_graph(catalog, model)
    if keep is None:
        wanted = set(graph.versions) - set(drop)  # ids: a version already gone is no error
    else:
        wanted = {resolve(catalog, model, ref) for ref in keep}
    keep_versions: set[str] = set()
    keep_anchors: set[str] = set()
    for version in wanted:
        versions, anchors = graph.requirements(version)
        keep_versions |= versions
        keep_anchors |= anchors

    doomed_versions = sorted(set(graph.versions) - keep_versions)
    doomed_anchors = sorted(set(catalog.anchor_ids(model)) - keep_anchors)
    names = catalog.all_names(model)
    doomed_names = sorted(n for n, r in names.items() if r.version not in keep_versions)
    rerooted = sorted(
        v for v in keep_anchors if graph.versions[v].parent not in (None, *keep_versions)
    )

    referenced: set[str] = set()
    for version in keep_versions - set(rerooted):
        delta = graph.versions[version].delta
        if delta is not None:
            referenced.update(ref.digest for ref in delta.objects)
    for version in keep_anchors:
        referenced.update(ref.digest for ref in graph.anchors[version].delta.objects)
    cutoff = now() - grace
    staging = review_staging(catalog, model, set(graph.versions), cutoff, live_jobs)
    referenced |= staging.referenced
    signed_prefix = keys.all_signatures_prefix(model)
    doomed_signatures = [
        info.key
        for info in catalog.list_keys(signed_prefix)
        if info.key[len(signed_prefix) :].split("/", 1)[0] not in keep_versions
    ]
    prefix = keys.objects_prefix(model)
    listed = catalog.list_keys(prefix)
    doomed_objects = [
        info
        for info in listed
        if (digest := keys.stem(info.key, prefix)) is not None
        and digest not in referenced
        and (info.modified is None or info.modified <= cutoff)
    ]

    if not dry_run:
        lease.check()
        catalog.delete([keys.name_key(model, n) for n in doomed_names])
        catalog.delete(doomed_signatures)
        for version in rerooted:
            old = graph.versions[version]
            catalog.replace_version(
                VersionManifest(
                    model=model, version=version, parent=None, delta=None, created_at=old.created_at
                )
            )
        catalog.delete([keys.version_key(model, v) for v in doomed_versions])
        catalog.delete([keys.anchor_key(model, v) for v in doomed_anchors])
        catalog.delete([info.key for info in staging.stale])
        lease.check()
        catalog.delete([info.key for info in doomed_objects])
    result = GcResult(
        kept_versions=sorted(keep_versions),
        deleted_versions=doomed_versions,
        deleted_anchors=doomed_anchors,
        deleted_names=doomed_names,
        deleted_staging_parts=len(staging.stale),
        deleted_objects=len(doomed_objects),
        freed_bytes=sum(info.size for info in doomed_objects),
        dry_run=dry_run,
        rerooted=rerooted,
    )
    log.info(
        "store.gc",
        model=model,
        dry_run=dry_run,
        freed_bytes=result.freed_bytes,
        staging_parts=result.deleted_staging_parts,
    )
    return result
