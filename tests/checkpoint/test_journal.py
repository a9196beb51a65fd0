"""The redo record finishes a torn tensor write, whether it holds changed elements or all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deltaroll.checkpoint import tensor_checksum
from deltaroll.checkpoint.journal import Journal, RedoRecord


@pytest.mark.parametrize("changed_fraction", [0.02, 0.9])
def test_redo_record_repairs_old_new_and_torn_bytes(
    tmp_path: Path, changed_fraction: float
) -> None:
    rng = np.random.default_rng(0)
    old = rng.integers(0, 2**16, size=10_000, dtype=np.uint16)
    new = old.copy()
    changed = rng.random(old.size) < changed_fraction
    new[changed] ^= 0x0101
    record = RedoRecord.between("w", 128, old, new, tensor_checksum(new))
    assert (record.positions is None) == (changed_fraction > 0.5)

    (tmp_path / "ckpt").mkdir()
    journal = Journal(tmp_path / "ckpt")
    journal.root.mkdir()
    journal.write_redo(record)
    loaded = journal.read_redo()
    assert loaded is not None and loaded.fits(new.size, new.dtype)

    torn_bytes = bytearray(new.tobytes()[:7001] + old.tobytes()[7001:])  # torn mid-element
    torn = np.frombuffer(torn_bytes, dtype=np.uint16).copy()
    for current in (old.copy(), new.copy(), torn):
        assert np.array_equal(loaded.redo(current), new)


def test_damaged_redo_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    journal = Journal(tmp_path / "ckpt")
    journal.root.mkdir()
    old = np.zeros(100, dtype=np.uint32)
    new = old.copy()
    new[5] = 7
    journal.write_redo(RedoRecord.between("w", 0, old, new, tensor_checksum(new)))
    redo = journal.root / "redo.bin"
    data = bytearray(redo.read_bytes())
    data[-1] ^= 1
    redo.write_bytes(bytes(data))
    assert journal.read_redo() is None
