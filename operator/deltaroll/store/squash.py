"""``squash``: replace the chain FROM -> ... -> TO by one direct delta FROM -> TO.

Both versions are materialized locally (the cheapest way the graph allows), diffed, and TO's
version manifest is atomically replaced by one whose parent is FROM. Intermediate versions stay
published (their own manifests are untouched) until a ``gc`` that does not keep them. Pods that
are at FROM then reach TO with one delta, usually smaller than the sum of the chain because
changes that cancel out or overwrite each other are counted once."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from deltaroll.checkpoint import diff_checkpoints
from deltaroll.store.aliases import resolve
from deltaroll.store.backends import ProgressCallback
from deltaroll.store.cache import ObjectCache
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import SquashError
from deltaroll.store.leases import publishing
from deltaroll.store.manifests import VersionManifest
from deltaroll.store.publish import delta_record, upload_delta_objects
from deltaroll.store.pull import load_graph, pull


@dataclass(frozen=True)
class SquashResult:
    version: str
    parent: str
    previous_parent: str | None
    delta_bytes: int
    previous_chain_bytes: int  # the deltas on the old path FROM -> TO, summed
    uploaded_bytes: int


def squash(
    catalog: Catalog,
    model: str,
    from_ref: str,
    to_ref: str,
    *,
    cache: ObjectCache,
    work_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> SquashResult:
    """Give version TO a direct delta from FROM; return both sizes for comparison."""
    source, target = resolve(catalog, model, from_ref), resolve(catalog, model, to_ref)
    if source == target:
        raise SquashError(f"FROM and TO are both {source}; pass two different versions")
    graph = load_graph(catalog, model)
    if target in graph.ancestors(source):
        raise SquashError(
            f"{target} is an ancestor of {source}: a delta {source} -> {target} as TO's parent "
            "link would make a cycle; pass the older version as FROM"
        )
    old_path = graph.plan(target, [source])
    chain_bytes = old_path.download_bytes if old_path is not None else 0
    with tempfile.TemporaryDirectory(prefix="deltaroll-squash-", dir=work_dir) as tmp:
        work = Path(tmp)
        pull(catalog, model, source, work / "from", cache=cache)
        pull(catalog, model, target, work / "to", cache=cache, base=work / "from")
        diff_checkpoints(work / "from", work / "to", work / "delta")
        record = delta_record(work / "delta")
        uploaded = upload_delta_objects(catalog, model, work / "delta", record, progress=progress)
        old = graph.versions[target]
        with publishing(catalog, model) as lease:  # as a publish: no gc until the record is in
            if catalog.find_version(model, source) is None:
                raise SquashError(f"{source} was deleted while squashing; nothing was changed")
            uploaded += upload_delta_objects(catalog, model, work / "delta", record, checked=True)
            lease.check()
            catalog.replace_version(
                VersionManifest(
                    model=model,
                    version=target,
                    parent=source,
                    delta=record,
                    created_at=old.created_at,
                )
            )
    return SquashResult(
        version=target,
        parent=source,
        previous_parent=old.parent,
        delta_bytes=record.total_bytes,
        previous_chain_bytes=chain_bytes,
        uploaded_bytes=uploaded,
    )
