"""``log``: the versions of a model as a tree, parents before children."""

from __future__ import annotations

from dataclasses import dataclass

from deltaroll.store.catalog import Catalog
from deltaroll.store.pull import load_graph


@dataclass(frozen=True)
class LogEntry:
    version: str
    parent: str | None
    names: list[str]
    anchored: bool
    delta_bytes: int  # bytes of the delta from the parent (0 for a root)
    anchor_bytes: int  # bytes of the full snapshot (0 without an anchor)
    created_at: str


def version_log(catalog: Catalog, model: str) -> list[LogEntry]:
    graph = load_graph(catalog, model)
    names: dict[str, list[str]] = {}
    for name, record in sorted(catalog.all_names(model).items()):
        names.setdefault(record.version, []).append(name)
    entries = []
    for version in graph.topological():
        manifest = graph.versions[version]
        anchor = graph.anchors.get(version)
        entries.append(
            LogEntry(
                version=version,
                parent=manifest.parent,
                names=names.get(version, []),
                anchored=anchor is not None,
                delta_bytes=manifest.delta.total_bytes if manifest.delta else 0,
                anchor_bytes=anchor.delta.total_bytes if anchor else 0,
                created_at=manifest.created_at.isoformat(),
            )
        )
    return entries
