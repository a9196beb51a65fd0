"""The redo log: complete and intact, or refused; never half-trusted."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.journal import Journal


def _journal(tmp_path: Path) -> Journal:
    (tmp_path / "ckpt").mkdir()
    journal = Journal(tmp_path / "ckpt")
    journal.root.mkdir()
    return journal


def test_redo_log_round_trips_sparse_and_whole_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**16, size=200, dtype=np.uint16)
    whole = rng.integers(0, 2**32, size=50, dtype=np.uint32)
    journal = _journal(tmp_path)
    with journal.changes_writer() as log:
        log.add("a", values, whole=False)
        log.add("b", whole, whole=True)
    a, b = journal.changes()
    assert (a.tensor, a.whole, a.count) == ("a", False, 200)
    assert np.array_equal(a.read(0, 200), values)
    assert np.array_equal(a.read(150, 30), values[150:180])  # a range, as a scatter reads it
    assert (b.tensor, b.whole) == ("b", True) and np.array_equal(b.read(0, 50), whole)


def test_a_range_outside_a_record_is_refused(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    with journal.changes_writer() as log:
        log.add("a", np.arange(10, dtype=np.uint16), whole=False)
    (record,) = journal.changes()
    with pytest.raises(CheckpointError, match="no values"):
        record.read(5, 6)


def test_redo_log_exists_only_once_complete(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    with pytest.raises(RuntimeError), journal.changes_writer() as log:
        log.add("a", np.arange(3, dtype=np.uint16), whole=False)
        raise RuntimeError("killed while staging")
    with pytest.raises(CheckpointError, match="damaged"):
        journal.changes()


@pytest.mark.parametrize("offset", [0, 20, -1])
def test_damaged_redo_log_is_refused(tmp_path: Path, offset: int) -> None:
    journal = _journal(tmp_path)
    with journal.changes_writer() as log:
        log.add("a", np.arange(3, dtype=np.uint16), whole=False)
    path = journal.root / "changes.bin"
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        journal.changes()


def test_a_sealed_log_claiming_more_than_it_holds_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    """A log whose record claims 10**15 elements (resealed, so its digest checks out) is
    refused without trying to read that much."""
    import blake3

    journal = _journal(tmp_path)
    meta = json.dumps({"tensor": "a", "dtype": "<u2", "count": 10**15, "whole": False}).encode()
    body = struct.pack("<I", len(meta)) + meta + bytes(30)
    (journal.root / "changes.bin").write_bytes(body + blake3.blake3(body).digest())
    with pytest.raises(CheckpointError, match="runs past the end"):
        journal.changes()
