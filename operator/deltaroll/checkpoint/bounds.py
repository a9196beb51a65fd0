"""Every size a delta's manifest claims, checked before an apply allocates or writes anything.

A manifest of a few KB says how much an apply will hold in memory and write: auxiliary files'
sizes, carried tensors' shapes, and chunk lists that may name one payload blob many times. Taken
on trust they let a 4 KB delta write a 512 MiB ``config.json`` (one ~2 KB zstd frame of zeros
listed eight times), allocated whole first. So, in one pass over the manifest:

- :func:`check_claims`: every chunk list of the side being produced has exactly the chunks its
  size needs (:func:`~deltaroll.checkpoint.chunks.put_chunks` cuts at ``CHUNK_BYTES``); the
  chunks listed from one blob claim no more in all than it can decompress to once (zstd's
  bound: an RLE block, 4 bytes, yields at most 128 KiB), so listing a blob again buys nothing;
  and all chunks together claim no more than the payload bytes they name can hold (blobs that
  overlap share their bytes); a sparse tensor's changed elements fit its payload (their values
  are one zstd frame inside it);
- :func:`check_limits`: the largest buffer a claim sizes (an auxiliary file, a carried tensor,
  the arrays a sparse tensor's changes are decoded into) fits the memory budget, and what the
  apply writes fits the destination's free disk.

Both are deterministic refusals of the delta, so an agent restarted after one refuses the same
delta again in O(manifest) instead of resuming into it.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Final

import numpy as np

from deltaroll.checkpoint import chunks
from deltaroll.checkpoint.chunks import frame_capacity
from deltaroll.checkpoint.dtypes import ITEMSIZE
from deltaroll.checkpoint.errors import CorruptDeltaError, DeltaTooLargeError
from deltaroll.checkpoint.manifest import DeltaManifest
from deltaroll.checkpoint.manifest_tensors import BlobRef, Side
from deltaroll.checkpoint.transform import other

#: Bytes an apply may hold for one buffer a manifest sizes; default: what the machine (or the
#: container's cgroup) has available.
MEMORY_BUDGET_ENV: Final = "DELTAROLL_MEMORY_BUDGET"
_CGROUP: Final = Path("/sys/fs/cgroup")
#: Bytes a sparse apply holds per changed element besides two values (old, new): its position
#: and, at worst, an exception rank (both int64).
_SPARSE_INDEX_BYTES: Final = 16


def check_claims(manifest: DeltaManifest, side: Side) -> None:
    """Refuse a manifest whose chunk lists for ``side`` claim more than its payload holds."""
    starts = [0, *accumulate(o.size for o in manifest.objects)]
    drawn: dict[int, int] = {}  # raw bytes claimed from the frame that starts at each byte
    spans: set[tuple[int, int]] = set()
    claimed = 0
    for field, nbytes, blobs in _chunk_lists(manifest, side):
        chunk_bytes = chunks.CHUNK_BYTES  # read here: a test may make chunks smaller
        needed = math.ceil(nbytes / chunk_bytes)
        if len(blobs) != needed:
            raise CorruptDeltaError(
                f"{field} lists {len(blobs)} chunk(s) for {nbytes} bytes, which are {needed} "
                f"chunk(s) of at most {chunk_bytes} bytes; the manifest is corrupt"
            )
        for index, blob in enumerate(blobs):
            raw = min(chunk_bytes, nbytes - index * chunk_bytes)
            start = starts[blob.object] + blob.offset
            total = drawn[start] = drawn.get(start, 0) + raw
            if total > frame_capacity(blob.length):
                raise CorruptDeltaError(
                    f"{field}[{index}] claims {total} bytes in all from blob {list(blob)} "
                    f"({blob.length} bytes), which can hold at most "
                    f"{frame_capacity(blob.length)} (a blob listed again counts again); the "
                    "manifest is corrupt"
                )
            spans.add((start, start + blob.length))
            claimed += raw
    payload = _union_length(sorted(spans))
    if claimed > frame_capacity(payload, frames=len(spans)):
        raise CorruptDeltaError(
            f"the {side}'s chunks claim {claimed} bytes, more than the {payload} bytes of "
            "payload they name can hold (their blobs overlap); the manifest is corrupt"
        )
    for name, changed, itemsize, blob in _sparse_changes(manifest):
        if changed * itemsize > frame_capacity(blob.length):
            raise CorruptDeltaError(
                f"tensors[{name!r}].changed_elements claims {changed} changed elements "
                f"({changed * itemsize} bytes of values), more than its {blob.length}-byte "
                "payload can hold; the manifest is corrupt"
            )


def check_limits(
    manifest: DeltaManifest, from_side: Side, destination: Path, *, in_place: bool
) -> None:
    """Refuse an apply whose largest manifest-sized buffer exceeds the memory budget, or whose
    writes exceed the free disk of ``destination`` (the checkpoint, or the output directory)."""
    to_side = other(from_side)
    budget = memory_budget()
    claims = [(field, nbytes) for field, nbytes, _ in _chunk_lists(manifest, to_side)]
    claims += [
        (f"tensors[{name!r}].changed_elements", changed * (2 * itemsize + _SPARSE_INDEX_BYTES))
        for name, changed, itemsize, _ in _sparse_changes(manifest)
    ]
    largest = max(claims, key=lambda claim: claim[1], default=None)
    if largest is not None and largest[1] > budget:
        field, nbytes = largest
        raise DeltaTooLargeError(
            f"{field.removesuffix('.chunks').removesuffix('_chunks')} needs a buffer of {nbytes} "
            f"bytes, more than the memory budget of {budget} (what is available, or "
            f"{MEMORY_BUDGET_ENV}); give the apply more memory; nothing was written"
        )
    needed = _bytes_written(manifest, from_side, in_place=in_place)
    free = free_disk(destination)
    if needed > free:
        raise DeltaTooLargeError(
            f"by its manifest this apply writes up to {needed} bytes, but only {free} are free "
            f"for {destination}; free some space or apply elsewhere; nothing was written"
        )


def memory_budget() -> int:
    """$DELTAROLL_MEMORY_BUDGET (bytes), else the memory this process can still get."""
    explicit = os.environ.get(MEMORY_BUDGET_ENV)
    if explicit is None:
        return available_memory()
    try:
        value = int(explicit)
    except ValueError:
        value = 0
    if value <= 0:
        raise DeltaTooLargeError(
            f"{MEMORY_BUDGET_ENV}={explicit!r} is not a positive number of bytes; fix or unset it"
        )
    return value


def available_memory() -> int:
    """The kernel's MemAvailable, or the cgroup v2 headroom (memory.max - memory.current) when
    the container's limit is tighter."""
    available = _meminfo_available()
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        current = int((_CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return available
    if limit == "max":
        return available
    return max(0, min(available, int(limit) - current))


def free_disk(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the file system that holds ``path`` (or
    would hold it: the nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _chunk_lists(
    manifest: DeltaManifest, side: Side
) -> Iterator[tuple[str, int, Sequence[BlobRef]]]:
    """(field, bytes claimed, chunks) of every chunk list that ``side`` is built from."""
    layout = manifest.layout(side)
    if layout is not None:
        for aux in layout.aux_files:
            yield f"{side}_layout.aux_files[{aux.name!r}].chunks", aux.size, aux.chunks
    columns = manifest.columns
    sides = columns.side(side)
    lists = columns.base_chunks if side == "base" else columns.target_chunks
    for name, kind, dtype, shape, blobs in zip(
        columns.name, columns.kind, sides.dtype, sides.shape, lists, strict=True
    ):
        if kind == "carried" and dtype is not None and shape is not None:
            nbytes = math.prod(shape) * ITEMSIZE[dtype]
            yield f"tensors[{name!r}].{side}_chunks", nbytes, [BlobRef._make(b) for b in blobs]


def _sparse_changes(manifest: DeltaManifest) -> Iterator[tuple[str, int, int, BlobRef]]:
    """(name, changed elements, bytes per value, payload) of every sparse tensor: an apply
    decodes its positions and values whole, sized by the count."""
    columns = manifest.columns
    for name, kind, dtype, changed, blob in zip(
        columns.name,
        columns.kind,
        columns.base.dtype,
        columns.changed_elements,
        columns.payload,
        strict=True,
    ):
        if kind == "sparse" and dtype is not None and blob is not None:
            yield name, changed, ITEMSIZE[dtype], BlobRef._make(blob)


def _union_length(spans: list[tuple[int, int]]) -> int:
    """Bytes covered by the sorted spans (overlapping blobs share their bytes)."""
    if not spans:
        return 0
    table = np.array(spans, dtype=np.int64)
    ends = np.maximum.accumulate(table[:, 1])
    starts = np.maximum(table[:, 0], np.concatenate(([0], ends[:-1])))
    return int(np.clip(table[:, 1] - starts, 0, None).sum())


def _bytes_written(manifest: DeltaManifest, from_side: Side, *, in_place: bool) -> int:
    """An upper bound on what the apply writes: the whole other side for a new copy; in place,
    the files rebuilt, the auxiliary files replaced and the redo log."""
    to_side = other(from_side)
    if not in_place:
        return manifest.checkpoint_bytes(to_side)
    from_layout, to_layout = manifest.layout(from_side), manifest.layout(to_side)
    if from_layout is None or to_layout is None:
        return manifest.checkpoint_bytes(to_side)
    entries = manifest.tensors
    single = to_layout.kind == "file"
    before = {("" if single else f.name): f.header_digest for f in from_layout.files}
    written = 0
    for file in to_layout.files:
        if before.get("" if single else file.name) != file.header_digest:
            sizes = (entries[row].side(to_side) for row in file.rows)
            written += 8 + file.header_size + sum(s.nbytes for s in sizes if s is not None)
    current = {aux.name: aux.digest for aux in from_layout.aux_files}
    written += sum(a.size for a in to_layout.aux_files if current.get(a.name) != a.digest)
    for entry in entries:
        side = entry.side(to_side)
        if side is not None and entry.kind == "sparse":
            written += entry.changed_elements * ITEMSIZE[side.dtype]
        elif side is not None and entry.kind == "dense":
            written += side.nbytes
    return written
