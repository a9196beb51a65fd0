"""A diffed tensor's side is mapped, faulted in and hashed ahead by a loader thread: windows
arrive in order and bit-exact, the digest covers every element once, a request out of order
restarts the loader, a file truncated under it is an error, and no thread outlives it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from deltaroll.checkpoint import open_checkpoint, tensor_digest
from deltaroll.checkpoint.errors import CheckpointError, InvalidCheckpointError
from deltaroll.checkpoint.read_ahead import SideStream
from deltaroll.checkpoint.reader import TensorFile, TensorRef
from fixtures.checkpoints import write_checkpoint

ELEMENTS = 1 << 16
WINDOW = 4096


@pytest.fixture
def ref(tmp_path: Path) -> TensorRef:
    values = torch.arange(ELEMENTS, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    path = write_checkpoint(tmp_path / "w.safetensors", {"w": values}, layout="file")
    return open_checkpoint(path).tensors["w"]


def _expected(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.uint16)


def test_windows_arrive_in_order_and_the_digest_is_the_tensors(ref: TensorRef) -> None:
    with TensorFile(ref) as file, SideStream(file) as side:
        for start in range(0, ELEMENTS, WINDOW):
            np.testing.assert_array_equal(side.read(start, WINDOW), _expected(start, WINDOW))
        digest = side.side().digest
    assert digest == tensor_digest(_expected(0, ELEMENTS))


def test_the_loader_maps_windows_ahead_of_the_reader(
    ref: TensorRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapped: list[int] = []
    three_ahead = threading.Event()
    map_window = TensorFile.map_window

    def record(self: TensorFile, start: int, count: int) -> np.ndarray:
        mapped.append(start)
        if len(mapped) == 4:
            three_ahead.set()
        return map_window(self, start, count)

    monkeypatch.setattr(TensorFile, "map_window", record)
    with TensorFile(ref) as file, SideStream(file, ahead=3) as side:
        side.read(0, WINDOW)
        # Without a second read, the loader fills its queue: windows 1-3 wait mapped.
        assert three_ahead.wait(10)
        assert mapped[:4] == [0, WINDOW, 2 * WINDOW, 3 * WINDOW]
    assert not [t for t in threading.enumerate() if t.name == "diff-read"]


def test_a_request_out_of_order_restarts_there_and_the_digest_needs_every_element(
    ref: TensorRef,
) -> None:
    with TensorFile(ref) as file, SideStream(file) as side:
        np.testing.assert_array_equal(side.read(0, WINDOW), _expected(0, WINDOW))
        np.testing.assert_array_equal(side.read(8 * WINDOW, 100), _expected(8 * WINDOW, 100))
        with pytest.raises(CheckpointError, match="not read whole"):
            side.side()
        for start in range(0, ELEMENTS, WINDOW):  # a second pass, as the dense form makes
            np.testing.assert_array_equal(side.read(start, WINDOW), _expected(start, WINDOW))
        assert side.side().digest == tensor_digest(_expected(0, ELEMENTS))


def test_a_window_past_a_truncated_files_end_is_an_error_not_a_crash(ref: TensorRef) -> None:
    """The loader faults each window in before anything reads it: a file cut short (here
    after two windows) raises at the first missing window instead of SIGBUS on access."""
    with TensorFile(ref) as file:
        os.truncate(ref.path, ref.begin + 2 * WINDOW * 2)
        with SideStream(file) as side:
            for start in (0, WINDOW):
                np.testing.assert_array_equal(side.read(start, WINDOW), _expected(start, WINDOW))
            with pytest.raises(InvalidCheckpointError, match="truncated"):
                side.read(2 * WINDOW, WINDOW)
