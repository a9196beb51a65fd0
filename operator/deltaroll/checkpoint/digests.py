"""Per-tensor digests and the version id of a checkpoint.

A tensor's digest is BLAKE3 of its raw bytes (256 bits, 64 hex characters): collision-resistant,
because a tenant's Job chooses the bytes it publishes, and fast enough (GB/s) for the publisher
to compute once per version and for the background scrub. The version id is BLAKE3 over every
tensor's (name, dtype, shape, digest) and every file a pod loads with them (config, tokenizer,
generation config: the auxiliary files), sorted by name, so the same weights and files get the
same id however they are sharded (the shard index is layout, not identity). It is cut to 128
bits (32 hex characters) to fit Kubernetes label values; every trust decision compares the
full per-tensor digests, never the id alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import blake3
import numpy as np

from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.errors import CorruptDeltaError
from deltaroll.checkpoint.manifest import CheckpointLayout, DeltaManifest
from deltaroll.checkpoint.manifest_tensors import TensorEntry, TensorTable
from deltaroll.checkpoint.reader import (
    INDEX_NAME,
    Checkpoint,
    TensorFile,
    TensorRef,
    open_checkpoint,
)
from deltaroll.collector import collector_paused

VERSION_ID_HEX_CHARS = 32
READ_WINDOW_BYTES = 16 << 20
_VERSION_DOMAIN = b"deltaroll.version/v2\0"


def tensor_digest(data: np.ndarray | bytes | bytearray | memoryview) -> str:
    """BLAKE3 of raw little-endian bytes (a tensor's or a file's), as 64 hex characters."""
    return blake3.blake3(byte_view(data), max_threads=blake3.blake3.AUTO).hexdigest()


def version_id(
    tensors: Iterable[tuple[str, str, Sequence[int], str]],
    files: Iterable[tuple[str, str]] = (),
) -> str:
    """The version id of tensors given as (name, safetensors dtype, shape, digest) and of the
    auxiliary files given as (name, digest); order-independent. The shard index is left out."""
    return version_digest(tensors, files)[:VERSION_ID_HEX_CHARS]


def version_digest(
    tensors: Iterable[tuple[str, str, Sequence[int], str]],
    files: Iterable[tuple[str, str]] = (),
) -> str:
    """The whole 256-bit digest the version id is cut from (64 hex characters): what a
    signature covers, so a signed version is collision-resistant however short its id.

    Tuples serialize as the JSON arrays they always did; the collector is paused while 100,000
    of them are built (it cost as much as the rest)."""
    with collector_paused():
        document = {
            "tensors": sorted(
                (n, dtype, tuple(shape), digest) for n, dtype, shape, digest in tensors
            ),
            "files": sorted((name, digest) for name, digest in files if name != INDEX_NAME),
        }
        blob = _VERSION_DOMAIN + json.dumps(document, separators=(",", ":")).encode()
    return blake3.blake3(blob).hexdigest()


def side_version(
    tensors: TensorTable | Iterable[TensorEntry],
    side: Literal["base", "target"],
    layout: CheckpointLayout | None,
) -> str:
    """The version id of one side of a delta, from its manifest's tensors (or the entries a
    diff built) and layout alone."""
    return side_digest(tensors, side, layout)[:VERSION_ID_HEX_CHARS]


def side_digest(
    tensors: TensorTable | Iterable[TensorEntry],
    side: Literal["base", "target"],
    layout: CheckpointLayout | None,
) -> str:
    """The whole :func:`version_digest` of one side of a delta."""
    if isinstance(tensors, TensorTable):
        identities: Iterable[tuple[str, str, Sequence[int], str]] = tensors.side_identities(side)
    else:
        sides = ((entry.name, entry.side(side)) for entry in tensors)
        identities = ((n, s.dtype, s.shape, s.digest) for n, s in sides if s is not None)
    return version_digest(
        identities,
        ((aux.name, aux.digest) for aux in layout.aux_files) if layout is not None else (),
    )


def stored_tensor_digest(ref: TensorRef, on_window: Callable[[int], None] | None = None) -> str:
    """The digest of a tensor's bytes in its file, read in windows (memory stays one window
    whatever the tensor's size); fails like :func:`read_tensor_bits` on a truncated file.

    ``on_window`` is told the size of each window once it is hashed: the agent's scrub paces
    itself there (and may raise to stop), so this layer never sleeps."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with TensorFile(ref) as source:
        per_window = max(1, READ_WINDOW_BYTES // source.dtype.itemsize)
        buffer = np.empty(min(ref.numel, per_window), source.dtype)
        for start in range(0, ref.numel, per_window):
            window = buffer[: min(per_window, ref.numel - start)]
            source.read_into(start, window)
            hasher.update(byte_view(window))
            if on_window:
                on_window(window.nbytes)
    return hasher.hexdigest()


def check_version_ids(manifest: DeltaManifest) -> None:
    """Refuse a delta whose version ids are not the ones its own entries make (a delta that
    names a version it does not produce); O(tensors), nothing read."""
    for side in ("base", "target"):
        claimed = manifest.version(side)
        layout = manifest.layout(side)
        if claimed is not None and claimed != side_version(manifest.tensors, side, layout):
            raise CorruptDeltaError(
                f"the delta names {side} version {claimed}, but its tensors and files make "
                f"another; it is corrupt or forged: fetch or recompute it"
            )


def checkpoint_digests(
    checkpoint: Checkpoint, on_bytes: Callable[[int], None] | None = None
) -> dict[str, str]:
    """Digest every tensor of an opened checkpoint, one window of one tensor at a time."""
    digests = {}
    for name, ref in checkpoint.tensors.items():
        digests[name] = stored_tensor_digest(ref)
        if on_bytes:
            on_bytes(ref.nbytes)
    return digests


def aux_digests(checkpoint: Checkpoint) -> dict[str, str]:
    """Digest every auxiliary file (small: config, tokenizer, index)."""
    return {name: tensor_digest(path.read_bytes()) for name, path in checkpoint.aux_files.items()}


def version_of(
    checkpoint: Checkpoint, digests: Mapping[str, str], files: Mapping[str, str] | None = None
) -> str:
    """The version id of an opened checkpoint given its tensor digests (and, if already known,
    its auxiliary files' digests; otherwise they are read)."""
    files = aux_digests(checkpoint) if files is None else files
    return version_id(
        ((name, ref.dtype, ref.shape, digests[name]) for name, ref in checkpoint.tensors.items()),
        files.items(),
    )


def checkpoint_version(path: Path) -> str:
    """The version id of the checkpoint at ``path`` (reads every tensor once)."""
    checkpoint = open_checkpoint(path)
    return version_of(checkpoint, checkpoint_digests(checkpoint))
