"""The background scrub, without a thread or a pod: its pace (an injected clock and sleep, never
the wall clock), what it finds (a flipped byte, named by tensor; without a state record, by the
version id), and how it gives way to the reconcile loop (a hold stops a pass, a stale finding
is dropped)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import kubernetes
import numpy as np
import pytest
import torch

from agent.helpers import (
    Published,
    assert_same_files,
    flip_untouched_byte,
    make_agent,
    pod_report,
)
from deltaroll.agent.metrics import AgentMetrics
from deltaroll.agent.scrub import Scrubber, ScrubGate, ScrubMismatch
from deltaroll.api.agent_state import AgentState
from deltaroll.checkpoint import digests, open_checkpoint
from deltaroll.checkpoint.state import forget_state, load_state, proven_version
from engines.processes import RunningEngine
from fixtures.checkpoints import write_checkpoint
from fixtures.polling import wait_for


class FakeTime:
    """A clock that moves only when the scrub sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def rest(self, _generation: int, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return True


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A small checkpoint directory with a trusted-state record, as an apply leaves it."""
    generator = torch.Generator().manual_seed(13)
    tensors = {
        "embed.weight": torch.randn(64, 32, generator=generator).to(torch.bfloat16),
        "layers.0.mlp.weight": torch.randn(128, 32, generator=generator).to(torch.bfloat16),
        "norm.weight": torch.ones(32, dtype=torch.float32),
    }
    path = write_checkpoint(tmp_path / "weights", tensors)
    proven_version(path)
    return path


def scrubber(weights: Path, gate: ScrubGate, fake: FakeTime, rate: int = 10_000) -> Scrubber:
    return Scrubber(
        weights, gate, rate=rate, interval_s=0, metrics=AgentMetrics(), clock=fake.clock,
        rest=fake.rest,
    )  # fmt: skip


def served(gate: ScrubGate, version: str) -> int:
    gate.serve(version)
    job = gate.next_pass(timeout=0)
    assert job is not None and job[0] == version
    return job[1]


def flip_byte(weights: Path, tensor: str) -> None:
    """Flip one byte in the middle of ``tensor``, in its file, as bit rot would."""
    ref = open_checkpoint(weights).tensors[tensor]
    fd = os.open(ref.path, os.O_RDWR)
    try:
        offset = ref.begin + ref.nbytes // 2
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0x10]), offset)
    finally:
        os.close(fd)


def total_bytes(weights: Path) -> int:
    checkpoint = open_checkpoint(weights)
    aux = sum(path.stat().st_size for path in checkpoint.aux_files.values())
    return sum(ref.nbytes for ref in checkpoint.tensors.values()) + aux


def largest_aux_file(weights: Path) -> int:
    return max(path.stat().st_size for path in open_checkpoint(weights).aux_files.values())


def test_a_pass_keeps_to_its_rate_window_by_window(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digests, "READ_WINDOW_BYTES", 1024)  # many windows in a small tensor
    version = proven_version(weights)
    size = total_bytes(weights)
    for rate in (1_000, 4_000):
        gate, fake = ScrubGate(), FakeTime()
        scrub = scrubber(weights, gate, fake, rate=rate)
        assert scrub.scrub_once(version, served(gate, version))
        assert fake.now == pytest.approx(size / rate)  # read time is zero on this clock
        assert len(fake.sleeps) > size // 1024  # paced after every window, not per pass
        # Never more than one read ahead: a window, or a whole (small) auxiliary file.
        assert max(fake.sleeps) <= max(1024, largest_aux_file(weights)) / rate + 1e-9
        assert scrub.metrics.scrub_bytes._value.get() == size
        assert scrub.metrics.scrub_passes._value.get() == 1
        assert gate.take() is None


def test_a_flipped_byte_is_found_and_named_by_tensor_and_file(weights: Path) -> None:
    version = proven_version(weights)
    gate, fake = ScrubGate(), FakeTime()
    scrub = scrubber(weights, gate, fake)
    generation = served(gate, version)
    assert scrub.scrub_once(version, generation) and gate.take() is None  # clean first

    flip_byte(weights, "layers.0.mlp.weight")
    assert scrub.scrub_once(version, generation)
    finding = gate.take()
    assert finding is not None and finding.version == version
    assert "'layers.0.mlp.weight' in model.safetensors" in finding.message
    assert scrub.metrics.scrub_mismatches._value.get() == 1
    assert scrub.metrics.scrub_passes._value.get() == 1  # the dirty pass is not a clean one
    assert gate.take() is None  # taken once


def test_an_edited_auxiliary_file_is_found(weights: Path) -> None:
    version = proven_version(weights)
    gate, fake = ScrubGate(), FakeTime()
    config = weights / "config.json"
    config.write_text(config.read_text().replace("tinylm", "tinyln"))
    assert scrubber(weights, gate, fake).scrub_once(version, served(gate, version))
    finding = gate.take()
    assert finding is not None and "file 'config.json'" in finding.message


def test_without_a_record_the_version_id_still_catches_a_flip(weights: Path) -> None:
    version = proven_version(weights)
    forget_state(weights)  # as on NFS, where no record is ever written
    gate, fake = ScrubGate(), FakeTime()
    scrub = scrubber(weights, gate, fake)
    generation = served(gate, version)
    assert scrub.scrub_once(version, generation) and gate.take() is None

    flip_byte(weights, "embed.weight")
    assert scrub.scrub_once(version, generation)
    finding = gate.take()
    assert finding is not None and f"not {version}" in finding.message


def test_a_record_of_another_version_is_not_believed(weights: Path) -> None:
    """A record whose digests do not make up the served version (here: a flip, then a record
    written over the flipped bytes) cannot hide the flip: the version id is recomputed."""
    version = proven_version(weights)
    flip_byte(weights, "norm.weight")
    forget_state(weights)
    assert proven_version(weights) != version  # a record vouching for the flipped bytes
    assert load_state(weights) is not None
    gate, fake = ScrubGate(), FakeTime()
    assert scrubber(weights, gate, fake).scrub_once(version, served(gate, version))
    finding = gate.take()
    assert finding is not None and f"not {version}" in finding.message


def test_a_hold_stops_the_pass_and_nothing_is_reported(weights: Path) -> None:
    version = proven_version(weights)
    flip_byte(weights, "embed.weight")  # a pass that ran to its end would report this
    gate, fake = ScrubGate(), FakeTime()

    def apply_starts(generation: int, seconds: float) -> bool:
        gate.hold()  # the loop is about to patch the weights
        return gate.rest(generation, seconds)

    scrub = Scrubber(
        weights, gate, rate=10_000, interval_s=0, metrics=AgentMetrics(), clock=fake.clock,
        rest=apply_starts,
    )  # fmt: skip
    assert not scrub.scrub_once(version, served(gate, version))
    assert gate.take() is None
    assert scrub.metrics.scrub_mismatches._value.get() == 0
    assert 0 < scrub.metrics.scrub_bytes._value.get() < total_bytes(weights)  # stopped early


def test_the_gate_starts_a_new_generation_on_each_change() -> None:
    gate = ScrubGate()
    assert gate.next_pass(timeout=0) is None  # nothing served yet
    first = served(gate, "v1")
    gate.serve("v1")  # the loop says so every pass: the pass goes on
    assert gate.current(first)
    second = served(gate, "v2")  # the bytes changed: start over
    assert second != first and not gate.current(first)
    stale = ScrubMismatch("v2", "tensor 'x'")
    gate.hold()
    assert not gate.post(stale, second) and gate.take() is None
    assert gate.next_pass(timeout=0) is None
    third = served(gate, "v2")
    assert gate.post(stale, third)
    gate.hold()  # a finding about bytes that are about to change is dropped
    assert gate.take() is None
    gate.close()
    assert gate.next_pass(timeout=0) is None and not gate.rest(third, 0)


def test_the_thread_passes_again_and_again_waits_while_held_and_stops_when_closed(
    weights: Path,
) -> None:
    version = proven_version(weights)
    gate, metrics = ScrubGate(), AgentMetrics()
    scrub = Scrubber(weights, gate, rate=1 << 30, interval_s=0.01, metrics=metrics)
    thread = threading.Thread(target=scrub.run, daemon=True)
    thread.start()
    try:
        gate.serve(version)
        wait_for(lambda: metrics.scrub_passes._value.get() >= 3, timeout=30)  # continuous
        assert metrics.scrub_last_pass._value.get() > 0
        gate.hold()  # a pass under way stops at its next window, and no other starts

        def settled() -> bool:
            before = metrics.scrub_bytes._value.get()
            time.sleep(0.2)
            return bool(metrics.scrub_bytes._value.get() == before)

        wait_for(settled, timeout=10)  # never, if passes went on while held
    finally:
        gate.close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_zero_rate_starts_no_scrub(weights: Path) -> None:
    with pytest.raises(ValueError, match="0 means"):
        Scrubber(weights, ScrubGate(), rate=0, interval_s=0, metrics=AgentMetrics())


def test_the_window_callback_sees_every_byte_once(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digests, "READ_WINDOW_BYTES", 1000)
    ref = open_checkpoint(weights).tensors["layers.0.mlp.weight"]
    windows: list[int] = []
    digest = digests.stored_tensor_digest(ref, on_window=windows.append)
    assert sum(windows) == ref.nbytes and len(windows) == -(-ref.nbytes // 1000)
    data = np.fromfile(ref.path, dtype=np.uint8, count=ref.nbytes, offset=ref.begin)
    assert digest == digests.tensor_digest(data)


# ---------------------------------------------------------------- with the reconcile loop


def test_the_loop_leaves_the_service_and_rebuilds_bit_exact_from_the_anchor(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    rig = make_agent(tmp_path, core, published.uri, engine.admin_url, "scrubbed")
    v1, v2 = published.ids["v1"], published.ids["v2"]
    for version in (v1, v2):  # v2 by a delta applied in place
        rig.want(version)
        for _ in range(3):
            rig.agent.reconcile_once()
        assert (rig.agent.state, rig.agent.engine_version) == (AgentState.READY, version)
    weights = rig.agent.volume.weights
    tensor, path = flip_untouched_byte(weights, published.paths["v1"])
    job = rig.agent.scrub.next_pass(timeout=0)
    assert job is not None and job[0] == v2
    scrub = Scrubber(
        weights, rig.agent.scrub, rate=1 << 30, interval_s=0, metrics=rig.agent.metrics
    )
    assert scrub.scrub_once(*job)

    rig.reporter.reports.clear()
    rig.agent.reconcile_once()
    assert rig.reporter.states() == ["Failed", "Pulling", "Applying", "Reloading", "Ready"]
    failed = rig.reporter.reports[0]
    assert not failed.weights_ready and failed.current_version is None
    assert f"'{tensor}' in {path.name}" in failed.message and "anchor" in failed.message
    assert rig.applied("anchor") == 2  # rebuilt, not patched
    assert (rig.agent.state, rig.agent.engine_version) == (AgentState.READY, v2)
    assert_same_files(weights, published.paths["v2"])
    assert rig.agent.metrics.scrub_mismatches._value.get() == 1
    assert rig.reporter.violations == []
    assert pod_report(core, "scrubbed")["weights_ready"] == "True"
