"""What planning a pull reads from the store: O(1) records for a step to a neighbour, and each
record once per reader, not once per pull, when the whole graph is needed.

An agent planned every version change on the model's whole graph: a listing of every version
and anchor per pod and version, which grows with the history. A pod that holds the wanted
version's parent (or child) now reads those two records alone. Otherwise each backend (file,
moto's S3) lists a revision per key, and a record is read again only when it changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaroll.agent.fetch import fetched_objects
from deltaroll.store import Store
from deltaroll.store.backends import ObjectInfo
from fixtures.checkpoints import train_checkpoints

MODEL = "tiny"


def record_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Each record key the store's backend reads from now on, counted."""
    reads: Counter[str] = Counter()
    backend = store.catalog.backend
    read = backend.read

    def counting(key: str) -> bytes:
        if "/versions/" in key or "/anchors/" in key or "/names/" in key:
            reads[key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1].removesuffix(".json")] += 1
        return read(key)

    monkeypatch.setattr(backend, "read", counting)
    return reads


def listings(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each prefix the store's backend lists from now on."""
    listed: list[str] = []
    backend = store.catalog.backend
    list_keys = backend.list

    def counting(prefix: str) -> Iterator[ObjectInfo]:
        listed.append(prefix.rstrip("/").rsplit("/", 1)[-1])
        return list_keys(prefix)

    monkeypatch.setattr(backend, "list", counting)
    return listed


def test_a_step_to_a_neighbour_reads_two_records_and_lists_nothing_whatever_the_history(
    store: Store, checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = [store.push(MODEL, checkpoints[0], anchor=True).version]
    for before, after in zip(checkpoints[:4], checkpoints[1:5], strict=True):
        versions.append(store.push(MODEL, after, base=before).version)
    agent = Store(store.uri, cache_dir=tmp_path / "agent-cache")
    reads, listed = record_reads(agent, monkeypatch), listings(agent, monkeypatch)

    forward = agent.plan(MODEL, versions[4], [versions[3]])
    assert [(s.kind, s.source, s.target) for s in forward.steps] == [
        ("forward", versions[3], versions[4])
    ]
    assert (reads, listed) == ({f"versions/{versions[4]}": 1}, [])  # before: 2 lists, 6 reads

    reads.clear()
    back = agent.plan(MODEL, versions[3], [versions[4]])  # a rollback
    assert [(s.kind, s.target) for s in back.steps] == [("reverse", versions[3])]
    assert (reads, listed) == ({f"versions/{versions[3]}": 1, f"versions/{versions[4]}": 1}, [])
    assert back.download_bytes == forward.download_bytes  # the same delta, backwards

    reads.clear()
    far = agent.plan(MODEL, versions[4], [versions[1]])  # no neighbour held: the graph
    assert far.path == versions[1:]
    assert listed == ["versions", "anchors"]


def test_a_dense_step_to_a_neighbour_is_planned_on_the_whole_graph(
    store: Store, checkpoints: list[Path], tmp_path: Path
) -> None:
    """A delta between unrelated weights costs about a snapshot: the target's anchor, cached
    here, costs nothing, and the planner must still see it."""
    v0 = store.push(MODEL, checkpoints[0], anchor=True).version
    unrelated = train_checkpoints(tmp_path / "unrelated", steps=0, seed=1)[0]
    v1 = store.push(MODEL, unrelated, base=checkpoints[0]).version
    store.push(MODEL, unrelated, anchor=True)
    anchored = store.plan(MODEL, v1, [])
    assert [s.kind for s in anchored.steps] == ["anchor"]
    with fetched_objects(store, MODEL, anchored.steps):  # the anchor's objects, cached
        plan = store.plan(MODEL, v1, [v0])
    assert [s.kind for s in plan.steps] == ["anchor"]
    assert plan.download_bytes == 0


def test_a_pull_reads_only_the_records_written_since_the_last_one(
    store: Store, checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store`` publishes; ``agent``, a long-lived reader of the same store, plans pulls."""
    v0 = store.push(MODEL, checkpoints[0], anchor=True).version
    v1 = store.push(MODEL, checkpoints[1], base=checkpoints[0]).version
    agent = Store(store.uri, cache_dir=tmp_path / "agent-cache")
    reads = record_reads(agent, monkeypatch)
    agent.plan(MODEL, v1, [])  # from nothing: the graph
    # the target's record twice: the plan reads it alone, then the graph
    assert reads == {f"versions/{v0}": 1, f"versions/{v1}": 2, f"anchors/{v0}": 1}

    v2 = store.push(MODEL, checkpoints[2], base=checkpoints[1]).version
    reads.clear()
    plan = agent.plan(MODEL, v2, [])
    assert reads == {f"versions/{v2}": 2}  # before: every version and anchor again
    assert plan.path == [v0, v1, v2]

    # a squash rewrites v2's record (a direct delta from v0): it lists with a new revision
    store.squash(MODEL, v0, v2)
    reads.clear()
    plan = agent.plan(MODEL, v2, [])
    assert reads == {f"versions/{v2}": 2}
    assert plan.path == [v0, v2]
    assert agent.graph(MODEL).versions[v2].parent == v0
