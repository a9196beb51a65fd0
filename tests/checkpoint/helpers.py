"""Small helpers of the checkpoint tests: snapshots of a checkpoint's bytes, byte flips."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deltaroll.checkpoint.state import state_path


def tree_digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` keyed by relative name (a single file: its content).

    The trusted-state record is left out: it describes the checkpoint (inode numbers, times),
    it is not part of it."""
    path = Path(path)
    if path.is_file():
        return {"<file>": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p != state_path(path)
    }


def flip_byte(path: Path, offset: int) -> None:
    """Flip every bit of the byte at ``offset`` (negative: from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
