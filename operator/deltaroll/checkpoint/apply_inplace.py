"""Applying a delta to a checkpoint in place, behind a journal (see :mod:`.journal`).

Weight files whose exact header is the same on both sides are patched at their tensors' byte
offsets; files whose layout changes are rebuilt whole in the journal's ``staged/`` folder first
and renamed over the old ones at the end. Running the same apply again after a crash (kill -9 at
any point) resumes and finishes; running it on a checkpoint already at the target does nothing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from deltaroll.checkpoint.checksums import checkpoint_checksums, tensor_checksum, version_of
from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.errors import (
    CheckpointError,
    InterruptedApplyError,
    InvalidCheckpointError,
    WrongBaseError,
)
from deltaroll.checkpoint.journal import Journal, JournalState, RedoRecord, exclusive_lock
from deltaroll.checkpoint.manifest import (
    CheckpointLayout,
    DeltaManifest,
    TensorEntry,
    WeightFileLayout,
)
from deltaroll.checkpoint.names import child_path
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint, read_tensor_bits
from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically
from deltaroll.checkpoint.transform import (
    OnBytes,
    Side,
    aux_file_bytes,
    other,
    read_to_side_bits,
    to_side_bits,
)
from deltaroll.checkpoint.writer import layout_header, write_weight_file


@dataclass
class _Plan:
    """Which weight files are patched in place, rebuilt, or removed."""

    patched: list[WeightFileLayout] = field(default_factory=list)
    rebuilt: list[WeightFileLayout] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def apply_in_place(
    manifest: DeltaManifest,
    objects: ObjectDir,
    path: Path,
    from_side: Side,
    on_bytes: OnBytes | None = None,
) -> bool:
    """Turn the checkpoint at ``path`` from ``from_side`` into the other side; False if it
    already was the other side (nothing changed)."""
    if not path.exists():
        raise InvalidCheckpointError(f"{path} does not exist: pass the checkpoint to patch")
    with exclusive_lock(path):
        return _apply_locked(manifest, objects, path, from_side, on_bytes)


def _apply_locked(
    manifest: DeltaManifest,
    objects: ObjectDir,
    path: Path,
    from_side: Side,
    on_bytes: OnBytes | None,
) -> bool:
    to_side = other(from_side)
    from_layout, to_layout = manifest.layout(from_side), manifest.layout(to_side)
    from_version, to_version = manifest.version(from_side), manifest.version(to_side)
    if from_layout is None or to_layout is None or from_version is None or to_version is None:
        raise CheckpointError("this delta is an anchor (from nothing): apply it with -o OUT_DIR")
    if from_layout.kind != to_layout.kind:
        raise CheckpointError(
            f"the delta turns a {from_layout.kind} checkpoint into a {to_layout.kind} one, which "
            "cannot be done in place: apply it with -o OUT_DIR"
        )
    direction: Literal["forward", "reverse"] = "forward" if from_side == "base" else "reverse"
    journal = Journal(path)
    state = journal.load()
    if state is None:
        journal.discard_leftovers()
        checkpoint = open_checkpoint(path)
        version = version_of(checkpoint, checkpoint_checksums(checkpoint, on_bytes))
        if version == to_version and _has_layout(checkpoint, to_layout, with_aux=True):
            return False
        if version != from_version:
            raise WrongBaseError(
                f"{path} is version {version}, but this delta applies to {from_version}"
                f"{' (reverse)' if direction == 'reverse' else ''}; nothing was changed"
            )
        if not _has_layout(checkpoint, from_layout, with_aux=False):
            raise WrongBaseError(
                f"{path} holds the right tensors but not in the file layout the delta expects; "
                "apply it with -o OUT_DIR instead; nothing was changed"
            )
        state = JournalState(
            manifest_digest=manifest.manifest_digest,
            direction=direction,
            from_version=from_version,
            to_version=to_version,
            phase="staging",
        )
        journal.save(state)
        crash_point("journal-created")
    elif (state.manifest_digest, state.direction) != (manifest.manifest_digest, direction):
        raise InterruptedApplyError(
            f"{path} holds an unfinished in-place apply of another delta or direction "
            f"({state.from_version} -> {state.to_version}, {state.direction}); run that apply "
            f"again to finish it first (journal: {journal.root})"
        )
    entries = {e.name: e for e in manifest.tensors}
    plan = _plan(from_layout, to_layout)
    if state.phase == "staging":
        _stage(journal, open_checkpoint(path), plan, entries, objects, from_side, on_bytes)
        state = state.model_copy(update={"phase": "patching"})
        journal.save(state)
    if state.phase == "patching":
        _patch(journal, open_checkpoint(path), plan, entries, objects, from_side, on_bytes)
        state = state.model_copy(update={"phase": "finishing"})
        journal.save(state)
        crash_point("patched")
    _finish(journal, path, plan, from_layout, to_layout, objects)
    final = open_checkpoint(path)
    if version_of(final, checkpoint_checksums(final)) != to_version:
        raise CheckpointError(
            f"{path} does not verify as {to_version} after the in-place apply; the journal is kept "
            f"at {journal.root}: run the same apply again, or restore the checkpoint"
        )
    journal.remove()
    return True


def _plan(from_layout: CheckpointLayout, to_layout: CheckpointLayout) -> _Plan:
    single = from_layout.kind == "file"
    from_files = {("" if single else f.name): f for f in from_layout.files}
    plan = _Plan()
    for file in to_layout.files:
        before = from_files.get("" if single else file.name)
        same = before is not None and before.header_object == file.header_object
        (plan.patched if same else plan.rebuilt).append(file)
    to_names = {f.name for f in to_layout.files} | {a.name for a in to_layout.aux_files}
    if not single:
        plan.removed = [f.name for f in from_layout.files if f.name not in to_names]
    return plan


def _weight_path(path: Path, layout_kind: str, name: str) -> Path:
    return path if layout_kind == "file" else child_path(path, name)


def _has_layout(checkpoint: Checkpoint, layout: CheckpointLayout, *, with_aux: bool) -> bool:
    """Whether the checkpoint's files carry exactly the layout's headers (and aux files)."""
    if checkpoint.kind != layout.kind or len(checkpoint.weight_files) != len(layout.files):
        return False
    for weight, file in zip(checkpoint.weight_files, layout.files, strict=True):
        digest = hashlib.sha256(weight.header.raw).hexdigest()
        if digest != file.header_object or (
            layout.kind == "directory" and weight.name != file.name
        ):
            return False
    if with_aux:
        actual = {n: tensor_checksum(p.read_bytes()) for n, p in checkpoint.aux_files.items()}
        return all(actual.get(a.name) == a.checksum for a in layout.aux_files)
    return True


def _stage(
    journal: Journal,
    checkpoint: Checkpoint,
    plan: _Plan,
    entries: dict[str, TensorEntry],
    objects: ObjectDir,
    from_side: Side,
    on_bytes: OnBytes | None,
) -> None:
    """Build every rebuilt file in ``staged/`` from the untouched checkpoint."""
    journal.reset_staged()
    for file in plan.rebuilt:
        header = layout_header(file, objects, entries, other(from_side))

        def tensor_bits(name: str) -> np.ndarray:
            return read_to_side_bits(entries[name], checkpoint, objects, from_side, on_bytes)

        write_weight_file(journal.staged / file.name, header, tensor_bits)
        crash_point("file-staged")
    fsync_directory(journal.staged)


def _patch(
    journal: Journal,
    checkpoint: Checkpoint,
    plan: _Plan,
    entries: dict[str, TensorEntry],
    objects: ObjectDir,
    from_side: Side,
    on_bytes: OnBytes | None,
) -> None:
    """Patch each changed tensor of the in-place files, redo record first."""
    to_side = other(from_side)
    _replay_redo(journal, checkpoint, entries, to_side)
    for file in plan.patched:
        for name in file.tensors:
            entry = entries[name]
            if entry.delta_object is None:
                continue
            ref = checkpoint.tensors[name]
            bits = read_tensor_bits(ref)
            current = tensor_checksum(bits)
            to_checksum = _checksum(entry, to_side)
            if current == to_checksum:
                continue
            if current != _checksum(entry, from_side):
                raise CheckpointError(
                    f"tensor {name!r} in {ref.path} matches neither side of the delta: the file "
                    "was changed outside Deltaroll during the apply; restore it from a snapshot"
                )
            old = bits.copy()
            new = to_side_bits(entry, bits, objects, from_side)
            journal.write_redo(RedoRecord.between(name, ref.begin, old, new, to_checksum))
            crash_point("redo-written", name)
            _write_at(ref.path, ref.begin, byte_view(new), name)
            journal.clear_redo()
            crash_point("tensor-patched")
            if on_bytes:
                on_bytes(ref.nbytes)


def _replay_redo(
    journal: Journal, checkpoint: Checkpoint, entries: dict[str, TensorEntry], to_side: Side
) -> None:
    """Finish the tensor write a crash interrupted, from its fsynced redo record."""
    record = journal.read_redo()
    if record is None:
        return
    ref = checkpoint.tensors.get(record.tensor)
    entry = entries.get(record.tensor)
    current = read_tensor_bits(ref) if ref is not None else None
    if (
        ref is None
        or entry is None
        or current is None
        or ref.begin != record.offset
        or _checksum(entry, to_side) != record.checksum
        or not record.fits(ref.numel, current.dtype)
        or tensor_checksum(new := record.redo(current)) != record.checksum
    ):
        raise CheckpointError(
            f"the redo record in {journal.root} does not belong to this apply; restore the "
            "checkpoint from a snapshot"
        )
    _write_at(ref.path, ref.begin, byte_view(new), record.tensor)
    journal.clear_redo()


def _write_at(path: Path, offset: int, data: memoryview, tensor: str) -> None:
    """Write ``data`` at ``offset`` and fsync (in two halves, so tests can crash in between)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        half = len(data) // 2
        _pwrite_all(fd, data[:half], offset)
        crash_point("tensor-half-written", tensor)
        _pwrite_all(fd, data[half:], offset + half)
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _finish(
    journal: Journal,
    path: Path,
    plan: _Plan,
    from_layout: CheckpointLayout,
    to_layout: CheckpointLayout,
    objects: ObjectDir,
) -> None:
    """Idempotent last steps: drop removed files, rename rebuilt ones in, rewrite aux files."""
    directory = path if to_layout.kind == "directory" else path.parent
    to_names = {f.name for f in to_layout.files} | {a.name for a in to_layout.aux_files}
    for name in plan.removed:
        child_path(directory, name).unlink(missing_ok=True)
    for aux in from_layout.aux_files:
        if aux.name not in to_names:
            child_path(directory, aux.name).unlink(missing_ok=True)
    for file in plan.rebuilt:
        staged = journal.staged / file.name
        if staged.exists():
            os.replace(staged, _weight_path(path, to_layout.kind, file.name))
            crash_point("file-renamed")
    for aux in to_layout.aux_files:
        destination = child_path(directory, aux.name)
        if destination.is_file() and tensor_checksum(destination.read_bytes()) == aux.checksum:
            continue
        write_file_atomically(destination, aux_file_bytes(aux, objects))
    fsync_directory(directory)


def _checksum(entry: TensorEntry, side: Side) -> str:
    tensor = entry.side(side)
    assert tensor is not None  # patched tensors exist on both sides
    return tensor.checksum
