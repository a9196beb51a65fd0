"""Trained checkpoints shared by the checkpoint tests: trained once per session, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.checkpoints import train_checkpoints


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    for layout in ("single", "sharded", "file"):
        train_checkpoints(root / layout, steps=2, layout=layout)
    return root


@pytest.fixture
def steps(trained_root: Path, tmp_path: Path) -> dict[str, list[Path]]:
    """Fresh copies of step-0..2 in every layout: ``steps["single"][1]`` etc."""
    copied = tmp_path / "ckpt"
    shutil.copytree(trained_root, copied)
    return {
        layout: sorted(
            (copied / layout).glob("step-*"), key=lambda p: int(p.name.split("-")[1].split(".")[0])
        )
        for layout in ("single", "sharded", "file")
    }
