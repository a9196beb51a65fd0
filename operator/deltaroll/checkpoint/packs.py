"""Payload blobs packed into a few large objects, and read back by (object, offset, length).

A version used to be one object per changed tensor: at 100,000 tensors (MoE models), 100,000
requests per pod per version. Blobs (codec payloads, zstd chunks of carried tensors and
auxiliary files, headers) are now appended to one stream cut into objects of at most
:data:`~deltaroll.checkpoint.manifest.PACK_BYTES`; a blob may run on from one object into the
next, so a version is ``ceil(payload / PACK_BYTES)`` objects. Identical blobs within a delta are
stored once. Objects stay content-addressed (their name is the SHA-256 of their bytes), and an
apply checks every object whole before it reads a blob (:func:`deltaroll.checkpoint.apply`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import blake3

from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest import PACK_BYTES, ObjectRef
from deltaroll.checkpoint.manifest_tensors import BlobRef
from deltaroll.checkpoint.objects import ObjectDir


class PackWriter:
    """Appends blobs to the delta's objects; :meth:`finish` returns them in stream order."""

    def __init__(
        self, objects: ObjectDir, *, first_index: int = 0, pack_bytes: int = PACK_BYTES
    ) -> None:
        """``first_index``: how many objects the manifest lists before this writer's."""
        self._objects = objects
        self._first_index = first_index
        self._pack_bytes = pack_bytes
        self._buffer = bytearray()
        self._written: list[ObjectRef] = []
        self._seen: dict[bytes, BlobRef] = {}
        self._expanded: dict[bytes, int] = {}

    def add(
        self, data: bytes | bytearray | memoryview, *, expands_to: int = 0, holds: int = 0
    ) -> BlobRef:
        """Store ``data`` (once per delta) and return where it lies. A compressed chunk gives
        ``expands_to`` (its raw size) and ``holds`` (the most its frame can yield): it is stored
        again rather than listed for more raw bytes in all than it holds."""
        key = blake3.blake3(data).digest()
        known = self._seen.get(key)
        expanded = self._expanded.get(key, 0) + expands_to
        if known is not None and (not expands_to or expanded <= holds):
            self._expanded[key] = expanded
            return known
        self._expanded[key] = expands_to
        if len(self._buffer) == self._pack_bytes:
            self._flush()
        blob = BlobRef(self._first_index + len(self._written), len(self._buffer), len(data))
        view = memoryview(data).cast("B")
        while view:
            room = self._pack_bytes - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if view:
                self._flush()
        self._seen[key] = blob
        return blob

    def _flush(self) -> None:
        digest = self._objects.put(memoryview(self._buffer))
        self._written.append(ObjectRef(digest=digest, size=len(self._buffer)))
        self._buffer = bytearray()

    def finish(self) -> list[ObjectRef]:
        if self._buffer:
            self._flush()
        return list(self._written)


class PackReader:
    """Reads blobs of a delta directory whose objects were checked (sizes are re-checked)."""

    def __init__(self, objects: ObjectDir, refs: Sequence[ObjectRef]) -> None:
        self.objects = objects
        self._refs = list(refs)

    def digest(self, index: int) -> str:
        return self._refs[index].digest if 0 <= index < len(self._refs) else f"#{index}"

    def read(self, blob: BlobRef) -> bytes | bytearray:
        """A blob's bytes. One that spans objects is read into a single buffer of its size
        (not grown piece by piece and then copied: a dense payload is hundreds of MB)."""
        index, offset, length = blob
        if 0 <= index < len(self._refs) and offset + length <= self._refs[index].size:
            return _read_at(self.objects, self._refs[index], offset, length)  # no copy
        out = bytearray(length)
        view, filled = memoryview(out), 0
        while filled < length:
            if index >= len(self._refs):
                raise CorruptDeltaError(f"blob {list(blob)} runs past the delta's last object")
            ref = self._refs[index]
            want = min(length - filled, ref.size - offset)
            _read_at(self.objects, ref, offset, want, into=view[filled : filled + want])
            filled += want
            index, offset = index + 1, 0
        return out


def _read_at(
    objects: ObjectDir, ref: ObjectRef, offset: int, length: int, into: memoryview | None = None
) -> bytes:
    """``length`` bytes of an object from ``offset``; with ``into``, read there (b"" returned)."""
    path = objects.path(ref.digest)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CorruptDeltaError(
            f"object {ref.digest} is missing from {objects.root} ({exc.strerror}); fetch the delta"
        ) from exc
    try:
        if os.fstat(fd).st_size != ref.size:
            raise CorruptDeltaError(
                f"object {ref.digest} in {objects.root} has the wrong size; fetch the delta again"
            )
        if into is None:
            data = os.pread(fd, length, offset)
            got = len(data)
        else:
            data, got = b"", os.preadv(fd, [into], offset)
    finally:
        os.close(fd)
    if got != length:
        raise CorruptDeltaError(f"object {ref.digest} ended early; fetch the delta again")
    return data
