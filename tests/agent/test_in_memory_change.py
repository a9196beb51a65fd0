"""An agent whose engine patches its weights in memory: when the engine's apply fails midway,
the old weights stay served until the agent reloads from disk, and the pod says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from agent.helpers import Published, last_change, make_agent
from agent.test_reconcile import reach
from deltaroll.checkpoint import open_checkpoint
from deltaroll.checkpoint.digests import checkpoint_digests
from deltaroll.engines.live_patch import FlatTensor
from deltaroll.engines.reference.server import ReferenceEngine
from engines.checkpoints import TinyCheckpoints
from engines.processes import InProcessEngine, serving_copy


@pytest.fixture
def in_process(llama: TinyCheckpoints, tmp_path: Path) -> Iterator[InProcessEngine]:
    with serving_copy(llama.v1, tmp_path / "boot") as engine:
        yield engine


def test_an_apply_failing_midway_keeps_the_old_weights_and_the_pod_reports_it(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    llama: TinyCheckpoints,
    in_process: InProcessEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = make_agent(tmp_path, core, published.uri, in_process.admin, "midway")
    v1, v2 = published.ids["v1"], published.ids["v2"]
    rig.want(v1)
    reach(rig, v1)
    v1_answer = in_process.answer()
    real_write, real_apply = FlatTensor.write_bits, ReferenceEngine.apply_delta
    writes: list[int] = []
    after_failure: list[Any] = []

    def failing_write(self: FlatTensor, positions: Any, bits: Any) -> None:
        writes.append(1)
        if len(writes) == 3:
            raise RuntimeError("CUDA error: out of memory")
        real_write(self, positions, bits)

    def observed_apply(self: ReferenceEngine, request: Any) -> Any:
        try:
            return real_apply(self, request)
        finally:  # what the engine serves right after its apply failed, before any reload
            after_failure.append((in_process.answer(), in_process.client.served_digests()))

    monkeypatch.setattr(FlatTensor, "write_bits", failing_write)
    monkeypatch.setattr(ReferenceEngine, "apply_delta", observed_apply)
    rig.want(v2)
    reach(rig, v2)  # the agent falls back to a reload from the patched disk
    answer, digests = after_failure[0]
    assert answer == v1_answer
    assert digests.version == v1
    assert digests.tensors == checkpoint_digests(open_checkpoint(llama.v1))
    assert rig.reporter.states()[-2:] == ["Reloading", "Ready"]
    change = last_change(core, "midway")
    assert change is not None and (change.version, change.method) == (v2, "disk-reload")
    assert "failed (CUDA error: out of memory)" in change.reason
    assert "old values were restored" in change.reason
    assert in_process.answer()[0][0] == v2
    assert rig.reporter.violations == []
