"""The engine-agnostic in-memory patch: real checkpoints trained with AdamW, real deltas, live
torch tensors; the patch must produce the target bit for bit, refuse what it cannot apply in
memory, and leave the old values in place when a write fails midway."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deltaroll.checkpoint import diff_checkpoints
from deltaroll.engines.errors import LayoutChangeError, LivePatchError, LiveWeightsMismatchError
from deltaroll.engines.live_patch import FlatTensor, LiveTensor, prepare_patch
from fixtures.checkpoints import read_tensors, train_checkpoints, write_checkpoint


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return train_checkpoints(tmp_path_factory.mktemp("steps"), steps=2)


@pytest.fixture(scope="module")
def delta(steps: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "d"
    diff_checkpoints(steps[1], steps[2], out)
    return out


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[n].dtype == b[n].dtype and torch.equal(_bits(a[n]), _bits(b[n])) for n in a
    )


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def test_patch_turns_live_tensors_into_the_target_and_back(steps: list[Path], delta: Path) -> None:
    live = read_tensors(steps[1])
    patch = prepare_patch(delta, live.get)
    assert not same_bits(live, read_tensors(steps[2]))  # prepare writes nothing
    kinds = {t.positions is None for t in patch.tensors}
    assert kinds == {True, False}  # the delta has sparse and dense tensors
    patch.commit()
    assert same_bits(live, read_tensors(steps[2]))
    assert 0 < patch.bytes_applied < sum(t.nbytes for t in live.values())
    prepare_patch(delta, live.get, reverse=True).commit()
    assert same_bits(live, read_tensors(steps[1]))


def test_live_values_other_than_the_base_are_refused_before_any_write(
    steps: list[Path], delta: Path
) -> None:
    live = read_tensors(steps[0])  # an older version than the delta's base
    before = {n: t.clone() for n, t in live.items()}
    with pytest.raises(LiveWeightsMismatchError, match="reload it from disk"):
        prepare_patch(delta, live.get)
    assert same_bits(live, before)


class FailingTensor:
    """A live tensor whose new values fail to be written halfway through."""

    def __init__(self, inner: FlatTensor, fail: bool) -> None:
        self.inner, self.fail = inner, fail
        self.writes = 0

    def read_bits(self, positions: np.ndarray | None) -> np.ndarray:
        return self.inner.read_bits(positions)

    def write_bits(self, positions: np.ndarray | None, bits: np.ndarray) -> None:
        self.writes += 1
        if self.fail and self.writes == 1:
            half = None if positions is None else positions[: len(positions) // 2]
            self.inner.write_bits(half, bits if half is None else bits[: len(half)])
            raise RuntimeError("device lost")
        self.inner.write_bits(positions, bits)


def test_a_write_failing_midway_restores_every_old_value(steps: list[Path], delta: Path) -> None:
    live = read_tensors(steps[1])
    before = {n: t.clone() for n, t in live.items()}
    wrapped: dict[str, LiveTensor] = {}

    def resolve(name: str) -> LiveTensor:
        if name not in wrapped:
            wrapped[name] = FailingTensor(FlatTensor(live[name]), fail=len(wrapped) == 2)
        return wrapped[name]

    patch = prepare_patch(delta, resolve)
    assert len(patch.tensors) > 3
    with pytest.raises(LivePatchError, match="old values were restored") as caught:
        patch.commit()
    assert caught.value.old_weights_kept
    assert same_bits(live, before)


def test_a_tensor_the_engine_holds_otherwise_takes_the_reload_path(
    steps: list[Path], delta: Path
) -> None:
    live = read_tensors(steps[1])
    changed = prepare_patch(delta, live.get).tensors[0].name
    quantized = {**live, changed: live[changed].to(torch.float32)}
    with pytest.raises(LayoutChangeError, match="must reload"):
        prepare_patch(delta, quantized.get)
    missing = {n: t for n, t in live.items() if n != changed}
    with pytest.raises(LayoutChangeError, match="holds no tensor"):
        prepare_patch(delta, missing.get)


def test_a_delta_that_adds_a_tensor_takes_the_reload_path(
    steps: list[Path], tmp_path: Path
) -> None:
    grown = {**read_tensors(steps[2]), "extra.bias": torch.zeros(8, dtype=torch.bfloat16)}
    target = write_checkpoint(tmp_path / "grown", grown)
    for aux in ("config.json", "tokenizer.json", "generation_config.json"):
        (target / aux).write_bytes((steps[2] / aux).read_bytes())
    diff_checkpoints(steps[1], target, tmp_path / "d")
    live = read_tensors(steps[1])
    with pytest.raises(LayoutChangeError, match="adds, removes or reshapes"):
        prepare_patch(tmp_path / "d", live.get)
