"""A newer annotation preempts a pull: the agent stops fetching for the old target, never applies
it, and follows the new annotation on the very next pass, keeping what it downloaded.

The annotation moves from inside the store's backend, right after the first object of the pull
arrives, so the pull is deterministically in progress when it happens."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import kubernetes

from agent.helpers import MODEL, Published, make_agent
from deltaroll.api.agent_state import AgentState
from deltaroll.checkpoint import checkpoint_version
from deltaroll.checkpoint.journal import Journal
from deltaroll.engines.reference.client import ReferenceEngineClient
from deltaroll.store.backends import Backend, ProgressCallback
from engines.processes import RunningEngine


class SwitchingBackend:
    """The store's real backend, counting every object key downloaded, and running ``switch``
    once, after the first object download has completed."""

    def __init__(self, inner: Backend, switch: Callable[[], None]) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.downloads: Counter[str] = Counter()
        self._switch: Callable[[], None] | None = switch
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def download_files(
        self, items: Sequence[tuple[str, Path]], *, progress: ProgressCallback | None = None
    ) -> None:
        self.inner.download_files(items, progress=progress)
        with self._lock:
            self.downloads.update(key for key, _ in items)
            switch, self._switch = self._switch, None
        if switch is not None:
            switch()


def path_bytes(published: Published, labels: list[str]) -> int:
    """Bytes of the distinct objects of the deltas that made ``labels`` (deltas share some)."""
    versions = published.store().versions(MODEL)
    refs = {}
    for label in labels:
        delta = versions[published.ids[label]].delta
        assert delta is not None
        refs.update({ref.digest: ref.size for ref in delta.objects})
    return sum(refs.values())


def test_a_newer_annotation_preempts_the_pull_and_nothing_is_applied_or_fetched_twice(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    rig = make_agent(tmp_path, core, published.uri, engine.admin_url, "superseded")
    v1, v3 = published.ids["v1"], published.ids["v3"]
    rig.want(v1)
    for _ in range(3):
        rig.agent.reconcile_once()
    assert rig.agent.state is AgentState.READY and rig.agent.engine_version == v1
    reloads = rig.agent.metrics.reloads.labels("ok")._value.get()
    downloaded_v1 = rig.downloaded()
    backend = SwitchingBackend(rig.agent.store.catalog.backend, lambda: rig.want(v1))
    rig.agent.store.catalog.backend = backend  # type: ignore[assignment]

    rig.want(v3)  # v1 -> v2 -> v3; the rollout is aborted (back to v1) during the pull
    assert rig.agent.reconcile_once() == 0.0  # the next pass comes at once, no back-off
    assert rig.agent.state is AgentState.PULLING
    assert rig.agent.message == f"superseded by {v1}"
    assert rig.agent.metrics.pulls_superseded._value.get() == 1
    assert rig.agent.metrics.failures._value.get() == 0
    assert checkpoint_version(rig.agent.volume.weights) == v1  # nothing touched the weights
    assert Journal(rig.agent.volume.weights).load() is None
    fetched_before = rig.downloaded() - downloaded_v1
    assert (
        0
        < fetched_before
        == sum(
            rig.agent.store.cache.path(key.rsplit("/", 1)[1]).stat().st_size
            for key in backend.downloads
        )
    )  # what arrived is counted and kept, verified, in the cache

    rig.agent.reconcile_once()
    assert rig.agent.state is AgentState.READY and rig.agent.engine_version == v1
    assert rig.agent.metrics.reloads.labels("ok")._value.get() == reloads  # v3 never reloaded
    served = ReferenceEngineClient(engine.admin_url, timeout=60).weights_checksum()
    assert served["version"] == v1 == checkpoint_version(published.paths["v1"])
    assert rig.applied("forward") == 0
    assert not any(v3 in report.message for report in rig.reporter.reports if report.state
                   is AgentState.APPLYING)  # fmt: skip
    assert all(report.current_version in (None, v1) for report in rig.reporter.reports)

    rig.want(v3)  # wanted again later: only what the first pull did not fetch is downloaded
    for _ in range(3):
        rig.agent.reconcile_once()
        if rig.agent.state is AgentState.READY and rig.agent.engine_version == v3:
            break
    assert rig.agent.state is AgentState.READY and rig.agent.engine_version == v3
    assert max(backend.downloads.values()) == 1  # no object was downloaded twice
    assert rig.downloaded() == downloaded_v1 + path_bytes(published, ["v2", "v3"])
    served = ReferenceEngineClient(engine.admin_url, timeout=60).weights_checksum()
    assert served["version"] == v3 == checkpoint_version(published.paths["v3"])
    assert rig.reporter.violations == []
