"""Writing a whole output directory atomically: build it under a temp name, then rename.

A reader (or a crashed writer's successor) therefore sees either no output or a complete one,
never a half-written delta or checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deltaroll.checkpoint.errors import OutputExistsError


def check_output_free(out_dir: Path) -> None:
    """Refuse an output path that exists as a file or a non-empty directory."""
    if (
        out_dir.is_symlink()
        or out_dir.exists()
        and (not out_dir.is_dir() or any(out_dir.iterdir()))
    ):
        raise OutputExistsError(
            f"{out_dir} already exists and is not an empty directory; choose another output path "
            "or remove it"
        )


@contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a temp directory beside ``out_dir``; on success it becomes ``out_dir``."""
    out_dir = Path(out_dir)
    check_output_free(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp"
    temp.mkdir()
    try:
        yield temp
        fsync_directory(temp)
        check_output_free(out_dir)
        os.rename(temp, out_dir)  # replaces an empty directory atomically
        fsync_directory(out_dir.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def write_file_atomically(
    path: Path, data: bytes | bytearray | memoryview, *, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never a mix
    (``durable=False``: readers never see a torn file, but a power loss may keep the old one)."""
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
    """Make renames and creations inside ``directory`` durable."""
    fsync_path(directory)


def fsync_path(path: Path) -> None:
    """fsync a file (or directory) that is not open: its bytes written so far are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(directory: Path) -> None:
    """``mkdir -p`` whose result survives a power loss: each folder it makes is fsynced into its
    parent (a folder that already exists costs one ``stat``)."""
    missing: list[Path] = []
    current = Path(directory)
    while not current.is_dir() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        # Made by a concurrent writer meanwhile (or not a folder: the write will say so).
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        fsync_directory(folder.parent)
