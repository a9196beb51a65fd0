"""Computing a delta between two checkpoints and writing it as a delta directory.

Tensors present on both sides with the same dtype and shape are read in windows (memory follows
the change set, not the tensor); others one whole tensor at a time. Each tensor present
on both sides with the same dtype and shape goes through the codec (unchanged / sparse / dense);
any other tensor (added, removed, resized, retyped) is carried whole for each side that has it,
so the delta stays reversible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deltaroll.checkpoint.chunks import put_chunks
from deltaroll.checkpoint.digests import side_version, tensor_digest
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.layouts import record_layout
from deltaroll.checkpoint.manifest import SCHEMA, DeltaManifest, write_manifest
from deltaroll.checkpoint.manifest_tensors import TensorEntry, TensorSide, TensorTable
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.packs import PackWriter
from deltaroll.checkpoint.read_ahead import SideStream
from deltaroll.checkpoint.reader import (
    Checkpoint,
    TensorFile,
    TensorRef,
    open_checkpoint,
    read_tensor_bits,
)
from deltaroll.checkpoint.staging import check_output_free, staged_directory
from deltaroll.checkpoint.transform import OnBytes
from deltaroll.codec import EncodedTensor, encode_tensor_delta, encode_windowed_delta
from deltaroll.codec.kernel_loading import stand_ins_unless_loaded, start_loading_kernels

# Bytes of each side read per window: large enough that the per-window Python work is noise,
# small enough to stay in the CPU's caches between reading, hashing and diffing a window.
WINDOW_BYTES = 8 << 20
# Windows the kernel is asked to read ahead of the next tensor's first (posix_fadvise
# WILLNEED) while a finished tensor's payload is compressed; within a tensor each side's
# SideStream reads ahead.
READ_AHEAD_WINDOWS = 16

# Elements diffed (same-shape tensors, base side) from which numba's compiled kernels are loaded
# at the start: below, the numpy stand-ins finish sooner than the load (~0.4 s of CPU alone,
# nearly twice that beside the diff's own threads on two cores) would repay itself: cold diffs
# of 1 and 2 GB of bf16 at 1 % used less CPU and wall time on the stand-ins (README, scale
# section). A tensor with more changes than numpy groups within its memory budget starts the
# load itself (deltaroll.codec.sparse_encoder).
KERNELS_MIN_ELEMENTS = 3 << 29

# Rewrites a tensor's bits on the target side (used by the TRL import to patch the base).
TargetOverride = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DeltaSummary:
    """What a diff produced; ``delta_bytes`` counts every object and the manifest on disk."""

    base_version: str | None
    target_version: str
    tensors: int
    total_elements: int
    changed_elements: int
    delta_bytes: int
    target_bytes: int
    delta_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff_checkpoints(
    base: Path | None,
    target: Path,
    out_dir: Path,
    *,
    level: int = 3,
    on_bytes: OnBytes | None = None,
    device: str | None = None,
) -> DeltaSummary:
    """Write the delta from ``base`` (``None``: an anchor, a delta from nothing) to ``target``.

    ``device`` (e.g. ``"cuda"``): compare the tensors there (the codec's torch path, identical
    payloads); ``None`` compares them on the CPU with numpy.
    """
    check_output_free(Path(out_dir))
    base_checkpoint = open_checkpoint(base) if base is not None else None
    return write_delta(
        base_checkpoint,
        open_checkpoint(target),
        Path(out_dir),
        level=level,
        on_bytes=on_bytes,
        device=device,
    )


def write_delta(
    base: Checkpoint | None,
    target: Checkpoint,
    out_dir: Path,
    *,
    level: int,
    on_bytes: OnBytes | None = None,
    target_override: TargetOverride | None = None,
    device: str | None = None,
) -> DeltaSummary:
    """Write the delta directory from opened checkpoints (the engine behind diff and imports)."""
    if device is None and _diffed_elements(base, target) >= KERNELS_MIN_ELEMENTS:
        start_loading_kernels()
    encoder = _Encoder(level, device)
    with staged_directory(out_dir) as staging, stand_ins_unless_loaded():
        objects = PackWriter(ObjectDir(staging))
        base_tensors = base.tensors if base is not None else {}
        names = list(target.tensors) + [n for n in base_tensors if n not in target.tensors]
        entries = []
        for index, name in enumerate(names):
            following = names[index + 1 : index + 2]
            entry = _tensor_entry(
                name,
                base_tensors.get(name),
                target.tensors.get(name),
                objects,
                encoder,
                target_override,
                [r for n in following for r in (base_tensors.get(n), target.tensors.get(n)) if r],
            )
            entries.append(entry)
            if on_bytes:
                on_bytes(_tensor_bytes(base_tensors.get(name), target.tensors.get(name)))
        rows = {name: row for row, name in enumerate(names)}
        base_layout = record_layout(base, objects, rows, level=level) if base is not None else None
        target_layout = (
            base_layout
            if target is base and base_layout is not None
            else record_layout(target, objects, rows, level=level)
        )
        table = TensorTable.from_entries(entries)
        manifest = DeltaManifest(
            schema=SCHEMA,
            base_version=side_version(table, "base", base_layout) if base is not None else None,
            target_version=side_version(table, "target", target_layout),
            base_layout=base_layout,
            target_layout=target_layout,
            tensors=table.columns,
            objects=objects.finish(),
            level=level,
        )
        manifest_bytes = write_manifest(staging, manifest)
    target_tensors = [e for e in entries if e.target is not None]
    return DeltaSummary(
        base_version=manifest.base_version,
        target_version=manifest.target_version,
        tensors=len(target_tensors),
        total_elements=sum(e.total_elements for e in target_tensors),
        changed_elements=sum(e.changed_elements for e in entries),
        delta_bytes=manifest.delta_bytes() + manifest_bytes,
        target_bytes=target.total_bytes,
        delta_dir=str(out_dir),
    )


def _diffed_elements(base: Checkpoint | None, target: Checkpoint) -> int:
    """Elements of the tensors both sides hold with the same dtype and shape."""
    pairs = (
        (ref, target.tensors.get(name)) for name, ref in (base.tensors if base else {}).items()
    )
    return sum(b.numel for b, t in pairs if t and (b.dtype, b.shape) == (t.dtype, t.shape))


def _windowed_entry(
    name: str,
    base: TensorRef,
    target: TensorRef,
    objects: PackWriter,
    level: int,
    following: list[TensorRef],
) -> TensorEntry:
    """A same-shape tensor diffed window by window: memory follows the change, not the tensor;
    each side is read and hashed on a thread of its own, windows ahead of the encoder. Once its last
    window is read, the disk is asked for the head of the ``following`` tensors, so it keeps
    streaming while this one's payload is compressed."""
    dtype = np.dtype(bits_view(base.dtype))
    with (
        TensorFile(base) as base_file,
        TensorFile(target) as target_file,
        SideStream(base_file) as base_side,
        SideStream(target_file) as target_side,
    ):
        sides = base_side, target_side

        def read(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
            window = sides[0].read(start, count), sides[1].read(start, count)
            if start + count == base.numel:
                for ref in following:
                    _read_ahead_head(ref)
            return window

        encoded = encode_windowed_delta(
            read,
            dtype,
            base.numel,
            level=level,
            window=WINDOW_BYTES // dtype.itemsize,
        )
    unchanged = encoded.kind.value == "unchanged"
    return TensorEntry(
        name=name,
        base=sides[0].side(),
        target=sides[1].side(),
        kind=encoded.kind.value,
        payload=None if unchanged else objects.add(encoded.payload),
        changes_digest=encoded.changes_digest,
        changed_elements=encoded.changed_elements,
        total_elements=encoded.total_elements,
    )


def _read_ahead_head(ref: TensorRef) -> None:
    """Ask the kernel to start reading the first windows of ``ref`` in the background."""
    with TensorFile(ref) as file:
        file.will_need(0, READ_AHEAD_WINDOWS * (WINDOW_BYTES // file.dtype.itemsize))


def _tensor_entry(
    name: str,
    base: TensorRef | None,
    target: TensorRef | None,
    objects: PackWriter,
    encoder: _Encoder,
    target_override: TargetOverride | None,
    following: list[TensorRef],
) -> TensorEntry:
    if (
        base is not None
        and target is not None
        and (base.dtype, base.shape) == (target.dtype, target.shape)
        and encoder.device is None
        and target_override is None
    ):
        return _windowed_entry(name, base, target, objects, encoder.level, following)
    base_bits = read_tensor_bits(base) if base is not None else None
    target_bits = read_tensor_bits(target) if target is not None else None
    if target_bits is not None and target_override is not None:
        target_bits = target_override(name, target_bits)
    base_side = _side(base, base_bits)
    target_side = _side(target, target_bits)
    if (
        base_bits is not None
        and target_bits is not None
        and base_side is not None
        and target_side is not None
        and (base_side.dtype, base_side.shape) == (target_side.dtype, target_side.shape)
    ):
        encoded = encoder.encode(base_bits, target_bits)
        unchanged = encoded.kind.value == "unchanged"
        return TensorEntry(
            name=name,
            base=base_side,
            target=target_side,
            kind=encoded.kind.value,
            payload=None if unchanged else objects.add(encoded.payload),
            changes_digest=encoded.changes_digest,
            changed_elements=encoded.changed_elements,
            total_elements=encoded.total_elements,
        )
    numel = target_bits.size if target_bits is not None else 0
    return TensorEntry(
        name=name,
        base=base_side,
        target=target_side,
        kind="carried",
        base_chunks=tuple(put_chunks(objects, base_bits, level=encoder.level))
        if base_bits is not None
        else (),
        target_chunks=tuple(put_chunks(objects, target_bits, level=encoder.level))
        if target_bits is not None
        else (),
        changed_elements=numel,
        total_elements=numel,
    )


@dataclass(frozen=True)
class _Encoder:
    """Runs the codec on the CPU (numpy) or, given a device, on torch tensors there."""

    level: int
    device: str | None

    def __post_init__(self) -> None:
        if self.device is None:
            return
        import torch

        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise CheckpointError(
                f"cannot use torch device {self.device!r} ({exc}); pass e.g. cpu or cuda"
            ) from None

    def encode(self, base: np.ndarray, target: np.ndarray) -> EncodedTensor:
        if self.device is None:
            return encode_tensor_delta(base, target, level=self.level)
        import torch

        on_device = [torch.from_numpy(bits).to(self.device) for bits in (base, target)]
        return encode_tensor_delta(*on_device, level=self.level)


def _side(ref: TensorRef | None, bits: np.ndarray | None) -> TensorSide | None:
    if ref is None or bits is None:
        return None
    return TensorSide(dtype=ref.dtype, shape=tuple(ref.shape), digest=tensor_digest(bits))


def _tensor_bytes(base: TensorRef | None, target: TensorRef | None) -> int:
    return (base.nbytes if base else 0) + (target.nbytes if target else 0)
