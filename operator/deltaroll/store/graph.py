"""The version graph of a model and the pull planner. Pure: manifests in, plans out.

Nodes are versions plus "nothing" (no local weights). Edges, each carrying a delta:

- forward   parent -> version   (the version's delta)
- reverse   version -> parent   (the same delta applied backwards: XOR deltas are reversible)
- anchor    nothing -> version  (a full snapshot)

A pull starts from every version the puller has, and from nothing, and takes the path that
downloads the fewest bytes (ties: fewer steps), using Dijkstra. The byte cost of an edge is what
its objects would cost to fetch; objects already in the local cache cost nothing, which is what
makes a resumed pull cheap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from deltaroll.store.manifests import AnchorManifest, DeltaRecord, VersionManifest

StepKind = Literal["anchor", "forward", "reverse"]


@dataclass(frozen=True)
class Step:
    """One delta to apply: from ``source`` (None: nothing) to ``target``."""

    kind: StepKind
    source: str | None
    target: str
    delta: DeltaRecord

    @property
    def reverse(self) -> bool:
        return self.kind == "reverse"


@dataclass(frozen=True)
class Plan:
    """The cheapest way from what the puller has to ``target``."""

    start: str | None  # the version the first step applies to; None: nothing (an anchor)
    target: str
    steps: tuple[Step, ...]
    download_bytes: int

    @property
    def path(self) -> list[str]:
        """Versions traversed, from the start (when there is one) to the target."""
        head = [] if self.start is None else [self.start]
        return head + [step.target for step in self.steps]


class VersionGraph:
    """Versions, their parents and anchors of one model."""

    def __init__(
        self, versions: dict[str, VersionManifest], anchors: dict[str, AnchorManifest]
    ) -> None:
        self.versions = versions
        self.anchors = {v: a for v, a in anchors.items() if v in versions}
        self._children: dict[str, list[str]] = {}
        for version, manifest in sorted(versions.items()):
            if manifest.parent is not None:
                self._children.setdefault(manifest.parent, []).append(version)

    def steps_from(self, node: str | None) -> Iterable[Step]:
        """Every edge leaving ``node``."""
        if node is None:
            for version, anchor in self.anchors.items():
                yield Step("anchor", None, version, anchor.delta)
            return
        manifest = self.versions[node]
        if manifest.parent in self.versions and manifest.delta is not None:
            yield Step("reverse", node, manifest.parent, manifest.delta)
        for child in self.children(node):
            delta = self.versions[child].delta
            if delta is not None:
                yield Step("forward", node, child, delta)

    def children(self, version: str) -> list[str]:
        return self._children.get(version, [])

    def plan(
        self,
        target: str,
        have: Iterable[str] = (),
        *,
        cost: Callable[[DeltaRecord], int] = lambda delta: delta.total_bytes,
    ) -> Plan | None:
        """The cheapest plan to reach ``target`` from any of ``have`` or from nothing; None
        when no path exists."""
        starts: list[str | None] = [None, *sorted(v for v in set(have) if v in self.versions)]
        if target in starts:
            return Plan(target, target, (), 0)
        best: dict[str | None, tuple[int, int]] = {}
        came_by: dict[str | None, Step] = {}
        queue: list[tuple[int, int, str, str | None]] = []
        for node in starts:
            best[node] = (0, 0)
            heapq.heappush(queue, (0, 0, node or "", node))
        while queue:
            size, hops, _, node = heapq.heappop(queue)
            if (size, hops) > best[node]:
                continue
            if node == target:
                return self._unwind(target, came_by, size)
            for step in self.steps_from(node):
                candidate = (size + cost(step.delta), hops + 1)
                if step.target not in best or candidate < best[step.target]:
                    best[step.target] = candidate
                    came_by[step.target] = step
                    heapq.heappush(queue, (*candidate, step.target, step.target))
        return None

    def _unwind(self, target: str, came_by: dict[str | None, Step], size: int) -> Plan:
        steps: list[Step] = []
        node: str | None = target
        while node in came_by:
            step = came_by[node]
            steps.append(step)
            node = step.source
        steps.reverse()
        return Plan(node, target, tuple(steps), size)

    def ancestors(self, version: str) -> list[str]:
        """Parents of ``version``, nearest first (stops at a root or a missing parent)."""
        chain: list[str] = []
        node = self.versions[version].parent
        while node is not None and node in self.versions and node not in chain:
            chain.append(node)
            node = self.versions[node].parent
        return chain

    def requirements(self, version: str) -> tuple[set[str], set[str]]:
        """What must stay for ``version`` to be rebuilt from nothing: (versions, anchors) along
        its parent chain up to the nearest anchor."""
        keep_versions = {version}
        node = version
        while node not in self.anchors:
            parent = self.versions[node].parent
            if parent is None or parent not in self.versions:
                break
            keep_versions.add(parent)
            node = parent
        return keep_versions, ({node} if node in self.anchors else set())

    def topological(self) -> list[str]:
        """Versions with every parent before its children; roots and siblings by creation."""
        order: list[str] = []
        seen: set[str] = set()
        by_time = sorted(self.versions, key=lambda v: (self.versions[v].created_at, v))
        roots = [v for v in by_time if self.versions[v].parent not in self.versions]
        stack = list(reversed(roots))
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            order.append(node)
            kids = sorted(self.children(node), key=lambda v: (self.versions[v].created_at, v))
            stack.extend(reversed(kids))
        return order + [v for v in by_time if v not in seen]  # only a damaged store has cycles
