"""What planning a pull reads from the store: each record once per reader, not once per pull.

An agent plans every version change on the model's whole graph; reading every version and
anchor record each time made a pull cost the store O(history) requests per pod. Each backend
(file, moto's S3) lists a revision per key, and a record is read again only when it changed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from deltaroll.store import Store

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


def test_a_pull_reads_only_the_records_written_since_the_last_one(
    store: Store, checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store`` publishes; ``agent``, a long-lived reader of the same store, plans pulls."""
    v0 = store.push(MODEL, checkpoints[0], anchor=True).version
    v1 = store.push(MODEL, checkpoints[1], base=checkpoints[0]).version
    agent = Store(store.uri, cache_dir=tmp_path / "agent-cache")
    reads = record_reads(agent, monkeypatch)
    agent.plan(MODEL, v1, [v0])
    # the target's record twice: resolving the id reads it alone, then the graph
    assert reads == {f"versions/{v0}": 1, f"versions/{v1}": 2, f"anchors/{v0}": 1}

    v2 = store.push(MODEL, checkpoints[2], base=checkpoints[1]).version
    reads.clear()
    plan = agent.plan(MODEL, v2, [v1])
    assert reads == {f"versions/{v2}": 2}  # before: every version and anchor again
    assert plan.path == [v1, v2]

    # a squash rewrites v2's record (a direct delta from v0): it lists with a new revision
    store.squash(MODEL, v0, v2)
    reads.clear()
    plan = agent.plan(MODEL, v2, [v0])
    assert reads == {f"versions/{v2}": 2}
    assert plan.path == [v0, v2]
    assert agent.graph(MODEL).versions[v2].parent == v0
