"""The local object cache: verified objects keyed by sha256, so an interrupted pull resumes.

An object enters the cache only by being renamed into place after its sha256 was checked, so a
file under its final name is complete and correct (the checkpoint layer checks again on apply).
Partial downloads live in ``.partial/`` and are discarded on the next attempt."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from deltaroll.store.manifests import ObjectRef
from deltaroll.store.names import validate_digest

_READ_BLOCK = 8 << 20


def default_cache_dir() -> Path:
    """$DELTAROLL_CACHE_DIR, else $XDG_CACHE_HOME/deltaroll/objects, else ~/.cache/..."""
    explicit = os.environ.get("DELTAROLL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deltaroll" / "objects"


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


class ObjectCache:
    """A directory of verified objects, ``<root>/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.partial = self.root / ".partial"

    def path(self, digest: str) -> Path:
        return self.root / validate_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def staging_path(self, digest: str) -> Path:
        """A fresh place for a download of ``digest`` before it is verified (unique, so two
        pulls sharing the cache never write the same file)."""
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial / f"{validate_digest(digest)}.{uuid.uuid4().hex[:12]}"

    def commit(self, digest: str, staged: Path, *, discard_mismatch: bool = True) -> str:
        """Verify a staged download and move it into the cache if it is ``digest``; a mismatch
        is deleted unless ``discard_mismatch`` is False. Returns the file's actual sha256."""
        actual = file_sha256(staged)
        if actual == digest:
            os.replace(staged, self.path(digest))
        elif discard_mismatch:
            staged.unlink(missing_ok=True)
        return actual

    def adopt_staged(self, refs: Iterable[ObjectRef]) -> int:
        """Commit complete downloads that an interrupted run left in staging; bytes adopted.

        Files that do not (yet) verify are left alone: another pull sharing the cache may still
        be writing them."""
        if not self.partial.is_dir():
            return 0
        adopted = 0
        for ref in refs:
            for staged in self.partial.glob(f"{validate_digest(ref.digest)}.*"):
                if self.has(ref.digest):
                    break
                with contextlib.suppress(FileNotFoundError):  # taken by a concurrent pull
                    if self.commit(ref.digest, staged, discard_mismatch=False) == ref.digest:
                        adopted += ref.size
        return adopted

    def link_into(self, digest: str, dest: Path) -> None:
        """Make ``dest`` a copy of a cached object: a hard link when the filesystem allows."""
        source = self.path(digest)
        dest.unlink(missing_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
