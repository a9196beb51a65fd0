"""An agent whose engine patches its weights in memory: when the engine's apply fails midway,
the old weights stay served until the agent reloads from disk, and the pod says why; a served
tensor that changes in the engine's memory is found by the served-copy check and reloaded; a
vLLM that does not pause is not patched, and the agent reloads it with the reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import torch
from safetensors.torch import load_file

from agent.helpers import Published, last_change, make_agent
from agent.test_reconcile import reach
from deltaroll.api.agent_state import AgentState
from deltaroll.api.engine_patch import VLLM_METHOD
from deltaroll.checkpoint import open_checkpoint
from deltaroll.checkpoint.digests import checkpoint_digests
from deltaroll.engines.live_patch import FlatTensor
from deltaroll.engines.reference.server import ReferenceEngine
from engines.checkpoints import TinyCheckpoints
from engines.fake_engines import FakeVLLM, vllm_error
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


def test_a_served_tensor_changed_in_memory_is_found_and_reloaded_from_disk(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    llama: TinyCheckpoints,
    in_process: InProcessEngine,
) -> None:
    rig = make_agent(tmp_path, core, published.uri, in_process.admin, "bitrot", engine_check_s=0.01)
    v1 = published.ids["v1"]
    rig.want(v1)
    reach(rig, v1)
    held = in_process.engine.current.model.state_dict()
    first = sorted(t.name for t in in_process.engine.current.tensors)[0]
    held[first].view(-1)[7] += 1  # memory the disk scrub never sees
    assert (
        in_process.client.served_digests([first]).tensors[first]
        != (  # type: ignore[union-attr]
            checkpoint_digests(open_checkpoint(llama.v1))[first]
        )
    )
    reloads = rig.agent.metrics.reloads.labels("ok")._value.get()
    for _ in range(40):  # the engine answers digests within its duty cycle: a few passes
        rig.agent.reconcile_once()
        if rig.agent.metrics.served_mismatches._value.get():
            break
        time.sleep(0.1)
    assert rig.agent.metrics.served_mismatches._value.get() == 1
    assert rig.agent.metrics.reloads.labels("ok")._value.get() == reloads + 1
    assert rig.agent.state is AgentState.READY and rig.agent.engine_version == v1
    time.sleep(1.5)  # past the engine's rate limit (MIN_INTERVAL_S)
    served = in_process.client.served_digests()
    assert served is not None
    assert served.tensors == checkpoint_digests(open_checkpoint(llama.v1))


def holding(checkpoint: Path) -> torch.nn.Module:
    """A worker's model holding the checkpoint's tensors as parameters under their own names
    (one rank, nothing fused): what the vLLM extension patches."""
    root = torch.nn.Module()
    for file in sorted(checkpoint.glob("*.safetensors")):
        for name, tensor in load_file(file).items():
            *path, leaf = name.split(".")
            module = root
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, torch.nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
    return root


def test_a_vllm_that_does_not_pause_is_not_patched_and_the_agent_reloads_with_the_reason(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
) -> None:
    """Requests would run on half-patched weights: the extension is not asked to patch, the
    workers keep the old weights, and the agent reloads from disk and says why."""
    v1, v2 = published.ids["v1"], published.ids["v2"]
    model = holding(published.paths["v1"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    weights = tmp_path / "models" / "weights"  # make_agent's volume
    with FakeVLLM(served_dir=str(weights), extension_model=model) as engine:
        rig = make_agent(tmp_path, core, published.uri, engine.url, "no-pause", engine_kind="vllm")
        rig.want(v1)
        reach(rig, v1)
        engine.pause_error = vllm_error(500, "the engine core is busy")
        engine.seen.clear()
        rig.want(v2)
        reach(rig, v2)
        rpc = [s.body.get("method") for s in engine.seen if s.path == "/collective_rpc"]
        assert VLLM_METHOD not in rpc and ("POST", "/update_weights") in engine.calls()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    change = last_change(core, "no-pause")
    assert change is not None and (change.version, change.method) == (v2, "disk-reload")
    assert "did not pause" in change.reason and "the engine core is busy" in change.reason
