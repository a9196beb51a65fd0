"""The ``file://`` backend's writes are durable with their names: a write that makes new folders
(a model's first object, a new version's signatures folder) fsyncs each folder it made into its
parent, so a power loss cannot keep a manifest while losing the folder of the objects it names.
The calls recorded are the real ``os.mkdir`` and ``os.fsync`` of a real write, passed on
unchanged."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from deltaroll.store.backends.file import FileBackend
from deltaroll.store.uri import parse_store_uri

KEY = "tiny/signatures/v1/key.json"


def record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    real_fsync, real_mkdir = os.fsync, os.mkdir

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def mkdir(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]
        events.append(("mkdir", str(Path(path).resolve())))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "mkdir", mkdir)
    return events


def write(backend: FileBackend, tmp_path: Path) -> None:
    backend.write(KEY, b"{}", create_only=True)


def replace(backend: FileBackend, tmp_path: Path) -> None:
    backend.write(KEY, b"{}", create_only=False)


def upload(backend: FileBackend, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"object bytes")
    backend.upload_files([(source, KEY)])


@pytest.mark.parametrize("action", [write, replace, upload])
def test_every_folder_a_write_makes_is_fsynced_into_its_parent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    action: Callable[[FileBackend, Path], None],
) -> None:
    """On main only the last folder was fsynced (after the rename): ``tiny/`` and
    ``tiny/signatures/`` could vanish with everything under them."""
    root = tmp_path / "store"
    root.mkdir()
    backend = FileBackend(parse_store_uri(f"file://{root}"))
    events = record_calls(monkeypatch)
    action(backend, tmp_path)
    made = [path for call, path in events if call == "mkdir"]
    assert made == [str(root / p) for p in ("tiny", "tiny/signatures", "tiny/signatures/v1")]
    for folder in made:
        created = events.index(("mkdir", folder))
        assert ("fsync", str(Path(folder).parent)) in events[created:], (folder, events)
    # The final name is durable too, and a write into folders that exist makes none.
    assert events[-1] == ("fsync", str(root / "tiny/signatures/v1"))
    events.clear()
    backend.write("tiny/signatures/v1/other.json", b"{}", create_only=True)
    assert [call for call, _ in events] == ["fsync", "fsync"]  # the file, then its folder
    assert (root / KEY).is_file()
