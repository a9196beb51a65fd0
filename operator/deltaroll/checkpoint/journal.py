"""The journal that makes an in-place apply crash-safe.

It lives beside the checkpoint's files (``<dir>/.deltaroll-journal/`` for a directory,
``.<file>.deltaroll-journal/`` next to a single file) and holds:

- ``state.json``: which delta, which direction, and the phase (staging -> patching ->
  finishing), replaced atomically and fsynced at each phase change;
- ``staged/``: complete new files for weight files whose layout changes (renamed in at the end);
- ``redo.bin``: the new values of the changed elements of the one tensor being patched (or its
  whole new bytes when most elements change), fsynced *before* its bytes in the checkpoint are
  touched. A crash in the middle of a tensor's write leaves bytes that match neither side; the
  redo record repairs them. Whether a tensor is already patched is
  decided by its checksum (base or target), never by a counter, because XOR patches are their
  own inverse and applying one twice would undo it.
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
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from deltaroll.checkpoint.checksums import tensor_checksum
from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically

Phase = Literal["staging", "patching", "finishing"]


class JournalState(BaseModel):
    """What an unfinished in-place apply was doing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest_digest: str
    direction: Literal["forward", "reverse"]
    from_version: str
    to_version: str
    phase: Phase


@dataclass(frozen=True)
class RedoRecord:
    """How to finish one tensor's write whatever a crash left behind (old, new or torn bytes).

    It holds the new values of only the elements that change (``positions``), because the other
    elements are identical on both sides, so even torn bytes of theirs are already right; when
    most elements change, it holds the whole new tensor (``positions`` is None).
    """

    tensor: str
    offset: int
    checksum: str  # of the whole new tensor
    positions: np.ndarray | None
    values: np.ndarray

    @classmethod
    def between(
        cls, tensor: str, offset: int, old: np.ndarray, new: np.ndarray, checksum: str
    ) -> RedoRecord:
        positions = np.flatnonzero(old != new)
        if positions.size * (8 + new.itemsize) >= new.nbytes:
            return cls(tensor, offset, checksum, None, new)
        return cls(tensor, offset, checksum, positions, new[positions])

    def redo(self, current: np.ndarray) -> np.ndarray:
        """The tensor's new bits, given its current bits (patched in place when sparse)."""
        if self.positions is None:
            return self.values
        current[self.positions] = self.values
        return current

    def fits(self, numel: int, dtype: np.dtype[Any]) -> bool:
        """Whether this record can describe a tensor of ``numel`` elements of ``dtype``."""
        if self.values.dtype != dtype:
            return False
        if self.positions is None:
            return bool(self.values.size == numel)
        in_range = (
            not self.positions.size or 0 <= self.positions.min() <= self.positions.max() < numel
        )
        return bool(in_range and self.positions.size == self.values.size)


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
        self._redo = self.root / "redo.bin"

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
        created = not self.root.exists()
        self.root.mkdir(exist_ok=True)
        write_file_atomically(self._state, state.model_dump_json().encode())
        fsync_directory(self.root)
        if created:
            fsync_directory(self.root.parent)

    def reset_staged(self) -> None:
        shutil.rmtree(self.staged, ignore_errors=True)
        self.staged.mkdir(parents=True)

    def write_redo(self, record: RedoRecord) -> None:
        """Write the redo record durably (atomic rename, fsync) before the tensor is touched."""
        positions = b"" if record.positions is None else record.positions.astype("<i8").tobytes()
        payload = positions + record.values.tobytes()
        meta = json.dumps(
            {
                "tensor": record.tensor,
                "offset": record.offset,
                "checksum": record.checksum,
                "dtype": record.values.dtype.str,
                "count": -1 if record.positions is None else int(record.positions.size),
                "payload_checksum": tensor_checksum(payload),
            }
        ).encode()
        write_file_atomically(self._redo, struct.pack("<Q", len(meta)) + meta + payload)
        fsync_directory(self.root)

    def read_redo(self) -> RedoRecord | None:
        """The pending redo record, or None if there is none (or it does not check out: it was
        never completely written, so the tensor it names was never touched)."""
        try:
            blob = self._redo.read_bytes()
            (meta_len,) = struct.unpack_from("<Q", blob)
            meta = json.loads(blob[8 : 8 + meta_len])
            payload = blob[8 + meta_len :]
            if tensor_checksum(payload) != meta["payload_checksum"]:
                return None
            count = int(meta["count"])
            split = 8 * max(count, 0)
            positions = None if count < 0 else np.frombuffer(payload[:split], dtype="<i8")
            values = np.frombuffer(payload[split:], dtype=np.dtype(meta["dtype"])).copy()
            return RedoRecord(
                meta["tensor"], int(meta["offset"]), meta["checksum"], positions, values
            )
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return None

    def clear_redo(self) -> None:
        self._redo.unlink(missing_ok=True)

    def pending(self) -> bool:
        """Whether an in-place apply is unfinished (its state file is the commit record)."""
        return self._state.exists()

    def remove(self) -> None:
        """Mark the apply finished (state file first, durably), then drop everything else."""
        self._state.unlink(missing_ok=True)
        fsync_directory(self.root)
        crash_point("journal-committed")
        self.discard_leftovers()

    def discard_leftovers(self) -> None:
        """Remove what a finished (or never started) apply may have left: no state, no work."""
        if self.root.exists() and not self.pending():
            shutil.rmtree(self.root, ignore_errors=True)
            fsync_directory(self.root.parent)
