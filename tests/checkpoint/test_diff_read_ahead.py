"""The diff keeps the disk streaming between tensors: once a tensor's last window is read, the
head of the next one is requested while the finished tensor's payload is compressed. Within a
tensor nothing is advised: each side's loader thread faults its windows in ahead (see
tests/checkpoint/test_read_ahead.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from deltaroll.checkpoint import diff_checkpoints
from deltaroll.checkpoint.reader import TensorFile
from fixtures.checkpoints import write_checkpoint


def test_the_next_tensor_is_read_ahead_when_one_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"layer.{i}.weight" for i in range(3)]
    zeros = torch.zeros(4096, dtype=torch.bfloat16)
    nudged = zeros.index_fill(0, torch.arange(0, 4096, 7), 1.0)  # sparse: one in seven
    base = write_checkpoint(tmp_path / "base", {name: zeros.clone() for name in names})
    target = write_checkpoint(tmp_path / "target", {name: nudged.clone() for name in names})
    heads: Counter[tuple[str, str]] = Counter()
    will_need = TensorFile.will_need

    def record(self: TensorFile, start: int, count: int) -> None:
        if start == 0:
            heads[(self.ref.path.parent.name, self.ref.name)] += 1
        will_need(self, start, count)

    monkeypatch.setattr(TensorFile, "will_need", record)
    diff_checkpoints(base, target, tmp_path / "delta")
    # Every tensor after the first is asked for once, when the one before it ended; the first
    # is read by its loaders alone.
    for side in ("base", "target"):
        assert [heads[(side, name)] for name in names] == [0, 1, 1]
