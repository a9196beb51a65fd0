from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.checkpoints import TinyCheckpoints, build_with_one_thread
from engines.processes import RunningEngine, start_reference_engine


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    return build_with_one_thread(tmp_path_factory.mktemp("checkpoints"))


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
