"""The pull planner on hand-built graphs: cheapest path by bytes, ties by steps."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from deltaroll.store.graph import VersionGraph
from deltaroll.store.manifests import AnchorManifest, DeltaRecord, ObjectRef, VersionManifest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def delta(base: str | None, target: str, size: int) -> DeltaRecord:
    """A delta record of one payload object of ``size`` bytes (its manifest counted as free)."""

    def ref(what: str, size: int) -> ObjectRef:
        return ObjectRef(
            digest=hashlib.sha256(f"{what} {base}->{target}".encode()).hexdigest(), size=size
        )

    return DeltaRecord(
        base_version=base,
        target_version=target,
        manifest=ref("manifest", 0),
        payload=[ref("payload", size)],
        changed_elements=1,
        total_elements=10,
        full_bytes=size * 10,
    )


def graph(edges: dict[str, tuple[str | None, int]], anchors: dict[str, int]) -> VersionGraph:
    versions = {
        v: VersionManifest(
            model="m",
            version=v,
            parent=p,
            delta=None if p is None else delta(p, v, size),
            created_at=T0,
        )
        for v, (p, size) in edges.items()
    }
    anchor_records = {
        v: AnchorManifest(model="m", version=v, delta=delta(None, v, size), created_at=T0)
        for v, size in anchors.items()
    }
    return VersionGraph(versions, anchor_records)


# a -> b -> c -> d -> e, and a branch c -> x; anchors at a (1000 bytes) and e (900 bytes)
G = graph(
    {"a": (None, 0), "b": ("a", 10), "c": ("b", 10), "d": ("c", 10), "e": ("d", 10), "x": ("c", 5)},
    {"a": 1000, "e": 900},
)


def test_forward_from_a_local_version() -> None:
    plan = G.plan("e", ["b"])
    assert plan is not None
    assert plan.path == ["b", "c", "d", "e"] and plan.download_bytes == 30
    assert [s.kind for s in plan.steps] == ["forward"] * 3


def test_backward_and_across_branches() -> None:
    plan = G.plan("x", ["e"])
    assert plan is not None
    assert plan.path == ["e", "d", "c", "x"]
    assert [s.kind for s in plan.steps] == ["reverse", "reverse", "forward"]


def test_from_nothing_takes_the_cheapest_anchor() -> None:
    plan = G.plan("d", [])
    assert plan is not None
    assert plan.start is None and plan.path == ["e", "d"] and plan.download_bytes == 910


def test_the_nearest_of_several_local_versions_wins() -> None:
    plan = G.plan("d", ["a", "x"])
    assert plan is not None
    assert plan.path == ["x", "c", "d"] and plan.download_bytes == 15


def test_cached_objects_cost_nothing() -> None:
    cached = {r.digest for r in G.anchors["a"].delta.objects}

    def cost(record: DeltaRecord) -> int:
        return sum(r.size for r in record.objects if r.digest not in cached)

    plan = G.plan("b", [], cost=cost)
    assert plan is not None
    assert plan.path == ["a", "b"] and plan.download_bytes == 10


def test_unreachable_and_trivial_targets() -> None:
    island = graph({"a": (None, 0), "b": ("a", 10)}, {})
    assert island.plan("b", []) is None
    plan = island.plan("b", ["b"])
    assert plan is not None and plan.steps == () and plan.path == ["b"]


def test_requirements_stop_at_the_nearest_anchor() -> None:
    assert G.requirements("x") == ({"a", "b", "c", "x"}, {"a"})
    assert G.requirements("e") == ({"e"}, {"e"})


def test_topological_order_puts_parents_first() -> None:
    order = G.topological()
    assert order.index("a") < order.index("b") < order.index("c") < order.index("x")
    assert set(order) == set(G.versions)
