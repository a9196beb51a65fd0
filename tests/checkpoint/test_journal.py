"""The undo log: every complete record read back as written; a torn last record ignored (its
window was never written); damage before the end refused, never half-trusted; an older
Deltaroll's journal refused with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xxhash

from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.journal import UNDO_PROTOCOL, Journal, JournalState


def _journal(tmp_path: Path) -> Journal:
    (tmp_path / "ckpt").mkdir()
    journal = Journal(tmp_path / "ckpt")
    journal.save(
        JournalState(
            manifest_digest="m",
            direction="forward",
            from_version="a",
            to_version="b",
            protocol=UNDO_PROTOCOL,
        )
    )
    return journal


def _log(journal: Journal, *records: tuple[str, np.ndarray, bool, int]) -> None:
    undo = journal.undo_log()
    try:
        for tensor, values, whole, first in records:
            undo.append(tensor, values, whole=whole, first=first)
        undo.sync()
    finally:
        undo.close()


def test_undo_log_round_trips_sparse_and_whole_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**16, size=200, dtype=np.uint16)
    whole = rng.integers(0, 2**32, size=50, dtype=np.uint32)
    journal = _journal(tmp_path)
    assert journal.undo_records() == []  # the commit leaves an empty log
    _log(journal, ("a", values[:150], False, 0), ("a", values[150:], False, 150))
    _log(journal, ("b", whole, True, 0))
    a1, a2, b = journal.undo_records()
    assert (a1.tensor, a1.whole, a1.first, a1.count) == ("a", False, 0, 150)
    assert (a2.first, a2.count) == (150, 50)
    assert np.array_equal(np.concatenate([a1.read(), a2.read()]), values)
    assert (b.tensor, b.whole) == ("b", True) and np.array_equal(b.read(), whole)
    journal.clear_undo()
    assert journal.undo_records() == []


@pytest.mark.parametrize("cut", [1, 10, 30, 50])
def test_a_torn_last_record_is_ignored(tmp_path: Path, cut: int) -> None:
    """Killed while appending: the record was never synced, so its window was never written."""
    journal = _journal(tmp_path)
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 0))
    intact = (journal.root / "undo.bin").stat().st_size
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 10))
    path = journal.root / "undo.bin"
    path.write_bytes(path.read_bytes()[: intact + cut])
    (record,) = journal.undo_records()
    assert record.first == 0 and record.count == 10


def test_a_last_record_that_fails_its_checksum_is_ignored(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 0))
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 10))
    path = journal.root / "undo.bin"
    data = bytearray(path.read_bytes())
    data[-12] ^= 1  # a value of the last record
    path.write_bytes(bytes(data))
    assert [r.first for r in journal.undo_records()] == [0]


@pytest.mark.parametrize("offset", [0, 25, 40])
def test_damage_before_the_last_record_is_refused(tmp_path: Path, offset: int) -> None:
    journal = _journal(tmp_path)
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 0))
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 10))
    path = journal.root / "undo.bin"
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        journal.undo_records()


def test_a_record_claiming_more_than_the_log_holds_is_torn_not_allocated(tmp_path: Path) -> None:
    """A record whose header claims 10**15 elements (resealed, so its checksum holds) is read
    as torn (it runs past the end) without trying to read that much; unsealed, it is damage."""
    journal = _journal(tmp_path)
    _log(journal, ("a", np.arange(10, dtype=np.uint16), False, 0))
    path = journal.root / "undo.bin"
    data = bytearray(path.read_bytes())
    data[16:24] = (10**15).to_bytes(8, "little")  # the count of the only record
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        journal.undo_records()
    data[24:32] = xxhash.xxh3_64_intdigest(bytes(data[:24])).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    assert journal.undo_records() == []


def test_an_older_journal_is_refused_with_what_to_do(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    state = json.loads((journal.root / "state.json").read_bytes())
    del state["protocol"]
    (journal.root / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="older Deltaroll.*same apply with that older"):
        journal.load()
