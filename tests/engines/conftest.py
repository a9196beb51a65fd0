from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.checkpoints import TinyCheckpoints, build_checkpoints
from engines.processes import RunningEngine, start_reference_engine


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine runs with one thread too: bit-identical arithmetic
    try:
        return build_checkpoints(tmp_path_factory.mktemp("checkpoints"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_engine(
    checkpoints: TinyCheckpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEngine]:
    """The reference engine serving v1; it must shut down cleanly on SIGTERM afterwards."""
    engine = start_reference_engine(
        checkpoints.v1, tmp_path_factory.mktemp("engine-log") / "stderr.txt"
    )
    yield engine
    assert engine.stop() == 0, engine.log.read_text()
