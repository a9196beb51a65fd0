"""The journal that makes an in-place apply crash-safe: an undo log.

It lives beside the checkpoint's files (``<dir>/.deltaroll-journal/`` for a directory,
``.<file>.deltaroll-journal/`` next to a single file) and holds:

- ``state.json``: which delta, which direction, and the journal's ``protocol``; written
  (atomically, fsynced) once the staged files below are complete and durable, and before the
  first byte of the checkpoint changes. Without it whatever else is here is leftover of a
  staging that never touched the checkpoint, and is discarded; with it, the checkpoint may be
  partly patched, and running the apply again puts it right;
- ``staged/``: complete new files for weight files whose layout changes (renamed in at the end);
- ``undo.bin``: the undo log, the values the patching replaces in the weight files that keep
  their layout. The patching reads a window of a tensor's changed positions, resolves their new
  values and appends the old ones as one checksummed record, made durable (fsync) *before* any
  of that window is written: no new value reaches the disk before the value it replaces can be
  put back. Positions are not logged (a record names its tensor and the rank of its first
  change; the positions are the payload's, which the state's manifest digest pins), so a record
  costs 2 bytes per bf16 change; a dense change logs the whole old tensor.

Rolling back writes every record's values back (idempotent; a torn last record is ignored: its
window was never written), fsyncs the files and empties the log. The apply rolls back when the
values it read turn out not to be the delta's (the change digest, checked once a tensor is read,
fails: the file is left bit-exact as it was, and the apply refused), and a resumed apply rolls
back first, then patches again from the untouched base, checking everything anew. An older
Deltaroll's journal (a redo log, no ``protocol``) is refused with what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import xxhash
from pydantic import BaseModel, ConfigDict, ValidationError

from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically

# A record's header: magic, meta length, rank (or element) of the first value, count, then
# the header's own checksum (so a damaged length is told from a torn end).
_RECORD = struct.Struct("<4sIQQ")
_MAGIC = b"DRU1"
_CHECKSUM = struct.Struct("<Q")
# What the state of a journal with an undo log says (an older journal has no protocol).
UNDO_PROTOCOL: Literal["undo-v1"] = "undo-v1"


@dataclass(frozen=True)
class UndoRecord:
    """One record of the undo log: the old values of ``count`` changes of ``tensor``, from the
    ``first``-th of its payload's changed positions (``whole``: the whole old tensor, from
    element ``first``). Its values are read on demand."""

    tensor: str
    dtype: np.dtype
    whole: bool
    first: int
    count: int
    path: Path
    offset: int  # of the first value in the log

    def read(self) -> np.ndarray:
        size = self.count * self.dtype.itemsize
        with self.path.open("rb") as f:
            data = os.pread(f.fileno(), size, self.offset)
        if len(data) != size:
            raise CheckpointError(f"the undo log {self.path} was truncated while reading")
        return np.frombuffer(data, self.dtype)


class UndoLog:
    """Appends records to the undo log; :meth:`sync` makes them durable."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def append(self, tensor: str, values: np.ndarray, *, whole: bool, first: int) -> None:
        meta = json.dumps({"tensor": tensor, "dtype": values.dtype.str, "whole": whole}).encode()
        head = _RECORD.pack(_MAGIC, len(meta), first, values.shape[0])
        head += _CHECKSUM.pack(xxhash.xxh3_64_intdigest(head)) + meta
        data = _raw(values)
        checksum = xxhash.xxh3_64()
        checksum.update(head)
        checksum.update(data)
        _write_all(self._fd, [head, data, _CHECKSUM.pack(checksum.intdigest())])

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view) :]


def _raw(values: np.ndarray) -> memoryview:
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8).data


def _read_undo(path: Path) -> list[UndoRecord]:
    """The log's complete records; a torn or unchecked last record is left out (its window was
    never written: the patching syncs a record before it writes), one before it is damage."""
    records: list[UndoRecord] = []
    size = path.stat().st_size
    with path.open("rb") as f:
        while f.tell() < size:
            start = f.tell()
            record = _read_undo_record(f, path, size)
            if record is None:
                if f.tell() < size:
                    raise ValueError(f"a damaged record at byte {start}, not the last one")
                break
            records.append(record)
    return records


def _read_undo_record(f: IO[bytes], path: Path, size: int) -> UndoRecord | None:
    """The next record, the file positioned after it; None if it is torn (positioned at the
    end) or fails a checksum (positioned where the rest cannot be trusted: damage if that is
    before the end)."""
    start = f.tell()
    head = f.read(_RECORD.size + _CHECKSUM.size)
    if len(head) < _RECORD.size + _CHECKSUM.size:
        f.seek(size)  # torn inside the header
        return None
    (stored,) = _CHECKSUM.unpack_from(head, _RECORD.size)
    if stored != xxhash.xxh3_64_intdigest(head[: _RECORD.size]):
        f.seek(start)
        return None
    magic, meta_len, first, count = _RECORD.unpack_from(head)
    if magic != _MAGIC:
        f.seek(start)
        return None
    meta_bytes = f.read(meta_len)
    if len(meta_bytes) < meta_len:
        f.seek(size)
        return None
    try:
        meta = json.loads(meta_bytes)
        dtype = np.dtype(meta["dtype"])
        tensor, whole = str(meta["tensor"]), bool(meta["whole"])
    except (ValueError, KeyError, TypeError):
        f.seek(start)
        return None
    offset = f.tell()
    end = offset + dtype.itemsize * count + _CHECKSUM.size
    if dtype.kind != "u":
        f.seek(start)
        return None
    if end > size:
        f.seek(size)  # torn inside the values
        return None
    checksum = xxhash.xxh3_64()
    checksum.update(head)
    checksum.update(meta_bytes)
    remaining = dtype.itemsize * count
    while remaining:
        block = f.read(min(remaining, 1 << 22))
        checksum.update(block)
        remaining -= len(block)
    (stored,) = _CHECKSUM.unpack(f.read(_CHECKSUM.size))
    if stored != checksum.intdigest():
        return None  # positioned after it: the last record, or damage
    return UndoRecord(tensor, dtype, whole, first, count, path, offset)


class JournalState(BaseModel):
    """An in-place apply that is committed (it may have patched the checkpoint: its undo log
    holds what to put back) and not yet finished."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest_digest: str
    direction: Literal["forward", "reverse"]
    from_version: str
    to_version: str
    # How the journal makes the apply safe: its undo log (see the module's docstring).
    protocol: Literal["undo-v1"]


@contextmanager
def exclusive_lock(checkpoint_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the checkpoint (its directory, or its single file) so two
    in-place applies never interleave; a second one fails at once instead of waiting."""
    fd = os.open(checkpoint_path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(
                f"another in-place apply is running on {checkpoint_path}; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def journal_dir(checkpoint_path: Path) -> Path:
    if checkpoint_path.is_dir():
        return checkpoint_path / ".deltaroll-journal"
    return checkpoint_path.parent / f".{checkpoint_path.name}.deltaroll-journal"


class Journal:
    """Reads and writes the journal of one checkpoint."""

    def __init__(self, checkpoint_path: Path) -> None:
        self.root = journal_dir(checkpoint_path)
        self.staged = self.root / "staged"
        self._state = self.root / "state.json"
        self._undo = self.root / "undo.bin"

    def load(self) -> JournalState | None:
        if not self._state.exists():
            return None
        try:
            data = self._state.read_bytes()
            document = json.loads(data)
            if isinstance(document, dict) and "protocol" not in document:
                raise CheckpointError(
                    f"{self._state} is the journal of an unfinished in-place apply by an older "
                    "Deltaroll (a redo log, which this version no longer replays): finish it by "
                    "running the same apply with that older version, or restore the checkpoint "
                    f"from a snapshot (the agent rebuilds from an anchor); then remove {self.root}"
                )
            return JournalState.model_validate_json(data)
        except (OSError, ValueError, ValidationError) as exc:
            raise CheckpointError(
                f"the in-place journal {self._state} is unreadable ({exc}); the checkpoint may be "
                "half-patched: restore it from a snapshot"
            ) from exc

    def save(self, state: JournalState) -> None:
        """Commit the apply: an empty undo log, then the state, durable with their folder."""
        self.root.mkdir(exist_ok=True)
        write_file_atomically(self._undo, b"")
        write_file_atomically(self._state, state.model_dump_json().encode())
        fsync_directory(self.root)
        fsync_directory(self.root.parent)

    def reset_staged(self) -> None:
        shutil.rmtree(self.staged, ignore_errors=True)
        self.staged.mkdir(parents=True)

    def undo_log(self) -> UndoLog:
        """The undo log, to append records to (the caller closes it)."""
        return UndoLog(self._undo)

    def undo_records(self) -> list[UndoRecord]:
        """The undo log's complete records, in the order they were written."""
        try:
            return _read_undo(self._undo)
        except (OSError, ValueError, struct.error) as exc:
            raise CheckpointError(
                f"the undo log {self._undo} is damaged ({exc}); the checkpoint may be "
                "half-patched: restore it from a snapshot (the agent rebuilds from an anchor)"
            ) from exc

    def clear_undo(self) -> None:
        """Empty the undo log, durably (once everything it holds was written back)."""
        fd = os.open(self._undo, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> bool:
        """Whether an in-place apply is unfinished (its state file is the commit record)."""
        return self._state.exists()

    def remove(self) -> None:
        """Mark the apply finished (state file first, durably), then drop everything else."""
        self._state.unlink(missing_ok=True)
        fsync_directory(self.root)
        crash_point("journal-committed")
        self.discard_leftovers()

    def abandon(self) -> None:
        """Drop an apply refused while staging: the checkpoint was not touched, so nothing is
        to be resumed (a restart must not run into the same refusal again)."""
        self._state.unlink(missing_ok=True)
        self.discard_leftovers()

    def discard_leftovers(self) -> None:
        """Remove what a finished (or never started) apply may have left: no state, no work."""
        if self.root.exists() and not self.pending():
            shutil.rmtree(self.root, ignore_errors=True)
            fsync_directory(self.root.parent)
