"""The highest sequence number a verifier accepted for each signed name, kept on disk.

A signed statement gives each name a sequence number (:class:`~.manifests.VersionStatement`);
a verifier remembers the highest it accepted per (store, model, name) and refuses a lower one,
so a bucket writer cannot move a name back to a version once signed under it (TUF's rollback
attack). Moving back on purpose is signing the older version under the name again: it gets a
new, higher sequence. The agent keeps its file beside the weights volume (it survives container
restarts with the volume); ``deltaroll pull`` keeps one under ``$XDG_STATE_HOME/deltaroll``.
Concurrent verifiers sharing a file serialize on an ``flock``; the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically
from deltaroll.store.errors import SignatureError, StoreError

_MAX_BYTES: Final = 4 << 20


class _Accepted(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence: int = Field(gt=0)
    version: str = Field(max_length=128)


class _SequencesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["deltaroll.name-sequences/v1"] = Field(
        default="deltaroll.name-sequences/v1", alias="schema"
    )
    names: dict[str, _Accepted] = Field(default_factory=dict)


def default_sequences_path() -> Path:
    """$XDG_STATE_HOME/deltaroll/name-sequences.json, else ~/.local/state/deltaroll/..."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "deltaroll" / "name-sequences.json"


class NameSequences:
    """One verifier's memory of the names it accepted, in the JSON file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def accept(self, store: str, model: str, name: str, sequence: int, version: str) -> None:
        """Remember ``sequence`` for ``name`` (pointing at ``version``), or raise
        :class:`SignatureError` when a higher one was accepted before."""
        entry = f"{store} {model} {name}"
        with self._locked():
            known = self._read()
            highest = known.names.get(entry)
            if highest is not None and sequence < highest.sequence:
                raise SignatureError(
                    f"{store}: name {name!r} of {model!r} points at {version}, signed under it "
                    f"at sequence {sequence}, but this verifier already accepted sequence "
                    f"{highest.sequence} ({highest.version}): the name was moved back by "
                    "someone without the publisher key; nothing was applied. To roll back on "
                    f"purpose, sign {version} under the name again (`deltaroll sign --name`)"
                )
            if highest is None or sequence > highest.sequence:
                known.names[entry] = _Accepted(sequence=sequence, version=version)
                self._write(known)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> _SequencesFile:
        try:
            with open(self.path, "rb") as f:
                data = f.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            return _SequencesFile()
        try:
            if len(data) > _MAX_BYTES:
                raise ValueError("too large")
            return _SequencesFile.model_validate_json(data)
        except (ValueError, ValidationError) as exc:
            raise StoreError(
                f"{self.path} is not a record of accepted name sequences ({exc}); it keeps "
                "names from being moved back, so it is not overwritten: restore or remove it"
            ) from exc

    def _write(self, known: _SequencesFile) -> None:
        write_file_atomically(self.path, known.model_dump_json(by_alias=True).encode())
        fsync_directory(self.path.parent)
