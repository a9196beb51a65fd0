"""Fixtures of the CLI tests: a trained checkpoint pair, and running ``deltaroll`` for real."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.checkpoints import train_checkpoints
from fixtures.cli import run_deltaroll

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def trained_cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-trained")
    train_checkpoints(root, steps=2, layout="sharded")
    return root


@pytest.fixture
def steps(trained_cli_root: Path, tmp_path: Path) -> list[Path]:
    shutil.copytree(trained_cli_root, tmp_path / "ckpt")
    return [tmp_path / "ckpt" / f"step-{i}" for i in range(3)]


@pytest.fixture
def deltaroll() -> Run:
    return run_deltaroll
