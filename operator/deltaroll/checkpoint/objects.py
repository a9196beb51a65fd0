"""The content-addressed objects of a delta directory: ``objects/<sha256 of the exact bytes>``.

Naming blobs by their digest makes them immutable and deduplicated (identical chunks are stored
once, here and in the store), and lets every reader check each blob it uses.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.staging import write_file_atomically

OBJECTS_DIR = "objects"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_READ_BLOCK = 1 << 20


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex characters (so it is safe as a file name)."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise CorruptDeltaError(f"invalid object digest {digest!r}: the manifest is corrupt")
    return digest


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectDir:
    """Reads and writes the objects of one delta directory."""

    def __init__(self, delta_dir: Path) -> None:
        self.root = Path(delta_dir) / OBJECTS_DIR

    def path(self, digest: str) -> Path:
        return self.root / check_digest(digest)

    def put(self, data: bytes | memoryview) -> str:
        """Store ``data`` (once) and return its digest; atomic, so a crash leaves no half object."""
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.exists():
            return digest
        self.root.mkdir(parents=True, exist_ok=True)
        write_file_atomically(target, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes of one object, checked against its name."""
        try:
            data = self.path(digest).read_bytes()
        except OSError as exc:
            raise CorruptDeltaError(
                f"object {digest} is missing from {self.root} ({exc.strerror}); fetch the delta"
            ) from exc
        if sha256_hex(data) != digest:
            raise _corrupt(digest, self.root)
        return data

    def verify(self, digest: str, size: int) -> None:
        """Check one object's size and digest without holding it in memory."""
        path = self.path(digest)
        try:
            actual_size = path.stat().st_size
            hasher = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(_READ_BLOCK):
                    hasher.update(block)
        except OSError as exc:
            raise CorruptDeltaError(
                f"object {digest} is missing from {self.root} ({exc.strerror}); fetch the delta"
            ) from exc
        if actual_size != size or hasher.hexdigest() != digest:
            raise _corrupt(digest, self.root)


def _corrupt(digest: str, root: Path) -> CorruptDeltaError:
    return CorruptDeltaError(
        f"object {digest} in {root} is corrupt (its bytes do not match its digest); "
        "fetch or recompute the delta"
    )
