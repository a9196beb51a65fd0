"""The reference engine patches its served weights in memory: requests running concurrently
with the change each see exactly one version (their outputs are compared with both versions'),
a write failing midway leaves the old weights served, and a delta that changes the layout is
refused for a reload. The engine runs its real HTTP servers on loopback with the real model."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deltaroll.checkpoint import diff_checkpoints, open_checkpoint
from deltaroll.checkpoint.digests import checkpoint_digests
from deltaroll.engines.errors import LayoutChangeError, LivePatchError
from deltaroll.engines.live_patch import FlatTensor
from deltaroll.engines.reference.loading import load_model
from engines.checkpoints import TinyCheckpoints
from engines.http_util import call
from engines.processes import Answer, InProcessEngine, serving_copy


@pytest.fixture
def served(checkpoints: TinyCheckpoints, tmp_path: Path) -> Iterator[InProcessEngine]:
    with serving_copy(checkpoints.v1, tmp_path / "weights") as engine:
        yield engine


@pytest.fixture(scope="module")
def delta(checkpoints: TinyCheckpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "v1-v2"
    diff_checkpoints(checkpoints.v1, checkpoints.v2, out)
    return out


def version_of(path: Path) -> str:
    return load_model(path).version


def outputs_of(path: Path) -> Answer:
    engine = InProcessEngine(path)
    try:
        return engine.answer()
    finally:
        engine.close()


def test_requests_during_an_in_memory_apply_see_one_version_or_the_other(
    served: InProcessEngine,
    checkpoints: TinyCheckpoints,
    delta: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2 = outputs_of(checkpoints.v1), outputs_of(checkpoints.v2)
    assert v1[0][0] != v2[0][0] and v1[0][1] != v2[0][1]
    real_write = FlatTensor.write_bits

    def slow_write(self: FlatTensor, positions: Any, bits: Any) -> None:
        real_write(self, positions, bits)
        time.sleep(0.02)  # a request let in now would compute with half the tensors patched

    monkeypatch.setattr(FlatTensor, "write_bits", slow_write)
    answers: list[Answer] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            answers.append(served.answer())

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    while len(answers) < 3:
        stop.wait(0.01)
    result = served.client.apply_delta(delta, from_version=v1[0][0], to_version=v2[0][0])
    before = len(answers)
    while len(answers) < before + 3:
        stop.wait(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    # Each answer is one whole version's, never a mix; both versions were served.
    assert {a[0] for a in answers} == {v1[0], v2[0]}
    assert {a[1] for a in answers} <= {v1[1], v2[1]}
    assert result.version == v2[0][0] and result.method == "in-memory"
    assert result.held_requests > 0 and result.pause_s > 0
    assert 0 < result.bytes_applied < sum(t.nbytes for t in checkpoint_refs(checkpoints.v1))
    assert result.held_s >= result.drain_s and result.held_s >= result.write_s
    assert served.answer() == v2
    # What is served is exactly v2's bytes, hashed in the engine's memory.
    digests = served.client.served_digests()
    assert digests is not None and digests.version == v2[0][0]
    assert digests.tensors == checkpoint_digests(open_checkpoint(checkpoints.v2))
    back = served.client.apply_delta(
        delta, from_version=v2[0][0], to_version=v1[0][0], reverse=True
    )
    assert back.version == v1[0][0] and served.answer() == v1


def checkpoint_refs(path: Path) -> list[Any]:
    return list(open_checkpoint(path).tensors.values())


def test_served_digests_are_rate_limited(served: InProcessEngine) -> None:
    assert served.client.served_digests() is not None
    assert served.client.served_digests() is None  # asked again at once: later
    status, body = call("POST", served.admin + "/served_digest", {"tensors": ["nope"]})
    assert status in (400, 429), body


def test_a_write_failing_midway_keeps_the_old_weights_served(
    served: InProcessEngine,
    checkpoints: TinyCheckpoints,
    delta: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2 = outputs_of(checkpoints.v1), outputs_of(checkpoints.v2)
    real_write = FlatTensor.write_bits
    writes = []

    def failing_write(self: FlatTensor, positions: Any, bits: Any) -> None:
        writes.append(1)
        if len(writes) == 4:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        real_write(self, positions, bits)

    monkeypatch.setattr(FlatTensor, "write_bits", failing_write)
    with pytest.raises(LivePatchError, match="old values were restored") as caught:
        served.client.apply_delta(delta, from_version=v1[0][0], to_version=v2[0][0])
    assert caught.value.old_weights_kept and not isinstance(caught.value, LayoutChangeError)
    assert len(writes) > 4  # three written, one failed, and the undo wrote them back
    monkeypatch.undo()
    assert served.answer() == v1
    served_now = served.client.served_digests()
    assert served_now is not None
    assert served_now.tensors == checkpoint_digests(open_checkpoint(checkpoints.v1))


def test_a_delta_from_another_version_is_refused_before_any_write(
    served: InProcessEngine, checkpoints: TinyCheckpoints, tmp_path: Path
) -> None:
    v1 = outputs_of(checkpoints.v1)
    diff_checkpoints(checkpoints.v2, checkpoints.diverged, tmp_path / "d")
    with pytest.raises(LivePatchError, match="serves"):
        served.client.apply_delta(
            tmp_path / "d",
            from_version=version_of(checkpoints.v2),
            to_version=version_of(checkpoints.diverged),
        )
    assert served.answer() == v1


def test_a_delta_that_changes_the_config_takes_the_reload_path(
    served: InProcessEngine, checkpoints: TinyCheckpoints, tmp_path: Path
) -> None:
    v1 = outputs_of(checkpoints.v1)
    target = tmp_path / "v2-config"
    shutil.copytree(checkpoints.v2, target)
    config = (target / "config.json").read_text()
    (target / "config.json").write_text(config.replace('"rms_norm_eps"', '"rms_norm_eps_x"', 1))
    diff_checkpoints(checkpoints.v1, target, tmp_path / "d")
    with pytest.raises(LayoutChangeError, match="must reload"):
        served.client.apply_delta(
            tmp_path / "d", from_version=v1[0][0], to_version=version_of_unloadable(target)
        )
    assert served.answer() == v1


def version_of_unloadable(path: Path) -> str:
    from deltaroll.checkpoint import checkpoint_version

    return checkpoint_version(path)
