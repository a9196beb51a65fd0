"""Crash recovery of the weights volume: a swap interrupted between any two steps, a half-built
copy, and an in-place apply whose delta the store no longer has (rebuilt from the anchor)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest

from agent.helpers import MODEL, Published, copy_store, make_agent, subprocess_env
from deltaroll.agent.volume import WeightsVolume
from deltaroll.api.agent_state import AgentState
from deltaroll.checkpoint import checkpoint_version, diff_checkpoints
from deltaroll.checkpoint.journal import Journal
from engines.checkpoints import TinyCheckpoints
from engines.processes import RunningEngine


@pytest.fixture
def volume(tmp_path: Path) -> WeightsVolume:
    return WeightsVolume(tmp_path / "models" / "weights")


def siblings(volume: WeightsVolume) -> list[str]:
    return sorted(p.name for p in volume.weights.parent.iterdir())


@pytest.mark.parametrize(
    "left",
    [
        ("weights", "built"),  # verified copy built, swap not started
        ("retired", "built"),  # killed between the swap's two renames
    ],
)
def test_an_interrupted_swap_ends_on_the_new_copy(
    volume: WeightsVolume, llama: TinyCheckpoints, left: tuple[str, str]
) -> None:
    old, new = (getattr(volume, name) for name in left)
    shutil.copytree(llama.v1, old)
    shutil.copytree(llama.v2, new)
    volume.recover()
    assert checkpoint_version(volume.weights) == checkpoint_version(llama.v2)
    assert siblings(volume) == ["weights"]


def test_a_swap_that_lost_its_new_copy_puts_the_old_one_back(
    volume: WeightsVolume, llama: TinyCheckpoints
) -> None:
    shutil.copytree(llama.v1, volume.retired)
    volume.recover()
    assert checkpoint_version(volume.weights) == checkpoint_version(llama.v1)


def test_half_built_copies_and_delta_dirs_are_dropped(
    volume: WeightsVolume, llama: TinyCheckpoints
) -> None:
    shutil.copytree(llama.v1, volume.weights)
    (volume.building / "partial").mkdir(parents=True)
    (volume.deltas / "0").mkdir(parents=True)
    volume.recover()
    assert siblings(volume) == ["weights"]
    assert checkpoint_version(volume.weights) == checkpoint_version(llama.v1)


def test_an_apply_whose_delta_is_gone_is_rebuilt_from_the_anchor(
    tmp_path: Path,
    core: kubernetes.client.CoreV1Api,
    published: Published,
    engine: RunningEngine,
) -> None:
    store = copy_store(published, tmp_path / "store")
    rig = make_agent(tmp_path, core, store.uri, engine.admin_url, "orphan")
    weights = rig.agent.volume.weights
    shutil.copytree(published.paths["v1"], weights)
    delta = diff_checkpoints(published.paths["v1"], published.paths["v2"], tmp_path / "delta")
    crash = subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from deltaroll.checkpoint import apply_delta; "
         "apply_delta(Path(sys.argv[1]), Path(sys.argv[2]), in_place=True)",
         str(weights), str(delta.delta_dir)],
        env=subprocess_env(DELTAROLL_CRASH_AT="tensor-patched:2"), check=False, timeout=120,
    )  # fmt: skip
    assert crash.returncode == -9 and Journal(weights).load() is not None
    (store.root / MODEL / "versions" / f"{published.ids['v2']}.json").unlink()  # gc'd

    rig.want(published.ids["v1"])
    for _ in range(3):
        rig.agent.reconcile_once()
        if rig.agent.state is AgentState.READY:
            break
    assert rig.agent.state is AgentState.READY, rig.agent.message
    assert checkpoint_version(weights) == published.ids["v1"]
    assert Journal(weights).load() is None
    assert rig.applied("anchor") == 1
    assert rig.reporter.violations == []
