"""The journal that makes an in-place apply crash-safe.

It lives beside the checkpoint's files (``<dir>/.deltaroll-journal/`` for a directory,
``.<file>.deltaroll-journal/`` next to a single file) and holds:

- ``state.json``: which delta and which direction; written (atomically, fsynced) once the
  staged files and the redo log below are complete and durable. It is the commit point: without
  it whatever else is here is leftover of a staging that never touched the checkpoint, and is
  discarded; with it, the apply is finished by running it again;
- ``staged/``: complete new files for weight files whose layout changes (renamed in at the end);
- ``changes.bin``: the redo log, every new value the apply writes into the weight files that
  keep their layout: per tensor the new values at its changed positions (a dense change: the
  whole new tensor), computed and checked against the delta *before* any byte of the checkpoint
  is touched, and made durable (fsync, then an atomic rename). The positions are not logged:
  they are decoded again from the delta's payload, which the state's manifest digest pins and
  which a resumed apply checks again like any other (2 bytes per bf16 change, not 10). Writing
  a value at a position is idempotent, so a crash at any point of the patching is repaired by
  writing the whole log again: no per-tensor progress is kept, and no tensor has to be re-read
  to find out whether it was patched (XOR payloads are their own inverse; replaying *them*
  would undo a write).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import blake3
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically

_DIGEST_BYTES = 32
_META = struct.Struct("<I")


@dataclass(frozen=True)
class LoggedValues:
    """One tensor's record in the redo log: its new values, either the whole tensor or one per
    position its sparse payload lists (the positions are not logged: they are the payload's,
    which the journal's manifest digest pins). Read on demand, a range at a time."""

    tensor: str
    dtype: np.dtype
    count: int
    whole: bool
    path: Path
    offset: int  # of the first value in the log

    def read(self, first: int, count: int) -> np.ndarray:
        """Values ``[first, first + count)`` of the record."""
        if not 0 <= first <= first + count <= self.count:
            raise CheckpointError(f"the redo log of {self.tensor!r} has no values {first}+{count}")
        size = count * self.dtype.itemsize
        with self.path.open("rb") as f:
            data = os.pread(f.fileno(), size, self.offset + first * self.dtype.itemsize)
        if len(data) != size:
            raise CheckpointError(f"the redo log {self.path} was truncated while reading")
        return np.frombuffer(data, self.dtype)


class ChangesWriter:
    """Appends one record per tensor to the redo log, hashing as it goes; keeps the records it
    wrote, so the process that wrote the log patches from it without reading it back whole to
    check its digest (which guards a log a crash left behind, not one written a moment ago)."""

    def __init__(self, f: IO[bytes], path: Path) -> None:
        self._f = f
        self._path = path
        self._hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        self._offset = 0
        self.records: list[LoggedValues] = []

    def _write(self, data: bytes | memoryview) -> None:
        self._f.write(data)
        self._hasher.update(data)
        self._offset += len(data)

    def add(self, tensor: str, values: np.ndarray, *, whole: bool) -> None:
        """Log a tensor's new values: the whole tensor, or one per position of its payload."""
        self.add_chunks(tensor, values.dtype, int(values.shape[0]), [values], whole=whole)

    def add_chunks(
        self, tensor: str, dtype: np.dtype, count: int, chunks: Iterable[np.ndarray], *, whole: bool
    ) -> None:
        """Log a tensor's ``count`` new values as they come, a window at a time (a dense
        change: the whole new tensor, never held in memory at once)."""
        meta = json.dumps(
            {"tensor": tensor, "dtype": np.dtype(dtype).str, "count": count, "whole": whole}
        ).encode()
        self._write(_META.pack(len(meta)) + meta)
        offset, written = self._offset, 0
        for chunk in chunks:
            if chunk.dtype != dtype or written + chunk.shape[0] > count:
                raise ValueError(f"the values of {tensor!r} do not fit their record")
            self._write(_raw(chunk))
            written += chunk.shape[0]
        if written != count:
            raise ValueError(f"{tensor!r}: {written} values logged, {count} announced")
        self.records.append(LoggedValues(tensor, np.dtype(dtype), count, whole, self._path, offset))

    def digest(self) -> bytes:
        return self._hasher.digest()


def _raw(values: np.ndarray) -> memoryview:
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8).data


def _read_exactly(f: IO[bytes], size: int, end: int) -> bytes:
    """``size`` bytes, refusing before it allocates when they would run past ``end``."""
    if size < 0 or f.tell() + size > end:
        raise ValueError("a record runs past the end of the log")
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated record")
    return data


def _read_record(f: IO[bytes], path: Path, end: int) -> LoggedValues:
    """The next record's header; its values are skipped (read on demand)."""
    (meta_len,) = _META.unpack(_read_exactly(f, _META.size, end))
    meta = json.loads(_read_exactly(f, meta_len, end))
    dtype = np.dtype(meta["dtype"])
    if dtype.kind != "u":
        raise ValueError(f"record of tensor {meta['tensor']!r} has dtype {dtype}")
    count, whole = int(meta["count"]), bool(meta["whole"])
    if count < 0:
        raise ValueError(f"record of tensor {meta['tensor']!r} has a negative count")
    offset, size = f.tell(), dtype.itemsize * count
    if offset + size > end:
        raise ValueError("a record runs past the end of the log")
    f.seek(offset + size)
    return LoggedValues(str(meta["tensor"]), dtype, count, whole, path, offset)


class JournalState(BaseModel):
    """An in-place apply that is committed (its redo log complete) and not yet finished."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest_digest: str
    direction: Literal["forward", "reverse"]
    from_version: str
    to_version: str
    # The weight files the redo log writes into (names as the checkpoint lists them): fsynced
    # before the journal goes. None in a journal of an older Deltaroll: every file is.
    written: tuple[str, ...] | None = None


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
        self._changes = self.root / "changes.bin"

    def load(self) -> JournalState | None:
        if not self._state.exists():
            return None
        try:
            return JournalState.model_validate_json(self._state.read_bytes())
        except (OSError, ValidationError) as exc:
            raise CheckpointError(
                f"the in-place journal {self._state} is unreadable ({exc}); the checkpoint may be "
                "half-patched: restore it from a snapshot"
            ) from exc

    def save(self, state: JournalState) -> None:
        """Commit the apply: durable, with the folder that holds it and its redo log."""
        self.root.mkdir(exist_ok=True)
        write_file_atomically(self._state, state.model_dump_json().encode())
        fsync_directory(self.root)
        fsync_directory(self.root.parent)

    def reset_staged(self) -> None:
        shutil.rmtree(self.staged, ignore_errors=True)
        self.staged.mkdir(parents=True)

    @contextmanager
    def changes_writer(self) -> Iterator[ChangesWriter]:
        """Write the redo log; it exists (complete and durable) only once the block ends, at
        the path its records name."""
        temp = self.root / ".changes.bin.tmp"
        with temp.open("wb") as f:
            writer = ChangesWriter(f, self._changes)
            yield writer
            f.write(writer.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self._changes)
        fsync_directory(self.root)

    def changes(self) -> list[LoggedValues]:
        """The redo log's records, after checking the whole log against its digest."""
        try:
            size = self._changes.stat().st_size
            hasher = blake3.blake3()
            with self._changes.open("rb") as f:
                remaining = size - _DIGEST_BYTES
                while remaining > 0:
                    block = f.read(min(remaining, 1 << 22))
                    if not block:
                        break
                    hasher.update(block)
                    remaining -= len(block)
                intact = remaining == 0 and f.read() == hasher.digest()
                if not intact:
                    raise ValueError("digest mismatch")
                f.seek(0)
                records = []
                while f.tell() < size - _DIGEST_BYTES:
                    records.append(_read_record(f, self._changes, size - _DIGEST_BYTES))
                return records
        except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
            raise CheckpointError(
                f"the redo log {self._changes} is damaged ({exc}); the checkpoint may be "
                "half-patched: restore it from a snapshot (the agent rebuilds from an anchor)"
            ) from exc

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
