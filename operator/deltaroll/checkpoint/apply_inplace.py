"""Applying a delta to a checkpoint in place, behind a journal (see :mod:`.journal`).

What it costs follows the delta, not the model. The checkpoint's trusted-state record (see
:mod:`.state`) says which version it holds and every tensor's digest; when the record still
matches the files, nothing else is read: for each changed tensor the apply decodes the payload,
gathers the current values at the changed positions, computes the new ones and refuses unless
positions, old and new values hash to the tensor's ``changes_digest``. Without a usable record
(first apply, another boot, a network file system, files touched) it hashes every tensor once,
as a full check, and continues the same way.

Steps:

1. staging: new files for weight files whose layout changes are built in the journal's
   ``staged/`` from the untouched checkpoint, and the sparse payloads of the files that keep
   their layout are decoded (and checked to fit). Nothing in the checkpoint has changed; a
   refusal or a crash here leaves it as it was.
2. commit: the journal's ``state.json`` is written (with an empty undo log), before the first
   byte of the checkpoint changes. While it is there the trusted-state record is not trusted.
3. patching, behind the undo log (see :mod:`.journal` and :mod:`.undo_patch`): each window of
   a tensor's changed positions is read, resolved and hashed in one pass, its old values logged
   and fsynced, then its new values written; at the end of a tensor its change digest is
   checked. A mismatch (the file is not the base it was recorded as) rolls every logged window
   back, leaves the file bit-exact as it was and refuses. A crash anywhere from the commit on is
   put right by running the apply again: it rolls back what the log holds, then patches again.
4. finishing: removed files go, staged files are renamed in, auxiliary files rewritten; then a
   new record vouches for the target (``durable: false`` until
   :func:`~deltaroll.checkpoint.state.make_durable` fsyncs the files, off the pause path) and
   the journal is dropped. On the way only the commit and the undo log's records are fsynced
   (and the base's files once, before the commit: usually clean, so cheap).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from deltaroll.checkpoint.changeset import (
    changes_mismatch,
    check_fits,
    span_of,
    sparse_changes,
)
from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.digests import aux_digests, checkpoint_digests, tensor_digest, version_of
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import (
    CheckpointError,
    CorruptDeltaError,
    InterruptedApplyError,
    InvalidCheckpointError,
    WrongBaseError,
)
from deltaroll.checkpoint.header import read_header
from deltaroll.checkpoint.journal import (
    UNDO_PROTOCOL,
    Journal,
    JournalState,
    UndoLog,
    UndoRecord,
    exclusive_lock,
)
from deltaroll.checkpoint.manifest import CheckpointLayout, DeltaManifest, WeightFileLayout
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.materialize import write_to_side
from deltaroll.checkpoint.names import child_path
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import (
    INDEX_NAME,
    Checkpoint,
    TensorRef,
    open_checkpoint,
    read_tensor_bits,
)
from deltaroll.checkpoint.scatter import TensorSpan, write_whole
from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically
from deltaroll.checkpoint.state import fsync_files, record_side, record_state, trusted_state
from deltaroll.checkpoint.transform import (
    OnBytes,
    Side,
    aux_file_bytes,
    other,
    to_side_bits,
)
from deltaroll.checkpoint.undo_patch import patch_sparse, roll_back_sparse
from deltaroll.checkpoint.writer import layout_header, write_weight_file
from deltaroll.codec import ChangesHasher, CodecError, SparseChanges
from deltaroll.errors import DeltarollError

# Where auxiliary files are staged, beside the rebuilt weight files (a name no file can have).
STAGED_AUX = ".aux"
# Decoded change sets kept in memory between staging and patching (beyond: decoded again).
HELD_CHANGES_BYTES = 128 << 20


@dataclass
class _Plan:
    """Which weight files are patched in place, rebuilt, or removed."""

    patched: list[WeightFileLayout] = field(default_factory=list)
    rebuilt: list[WeightFileLayout] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Apply:
    """One in-place apply: the delta, its direction, and where the checkpoint is."""

    manifest: DeltaManifest
    objects: PackReader
    path: Path
    from_side: Side
    on_bytes: OnBytes | None

    @property
    def to_side(self) -> Side:
        return other(self.from_side)

    def layout(self, side: Side) -> CheckpointLayout:
        layout = self.manifest.layout(side)
        assert layout is not None  # checked on entry: not an anchor
        return layout

    @property
    def entries(self) -> dict[str, TensorEntry]:
        return {e.name: e for e in self.manifest.tensors}


def apply_in_place(
    manifest: DeltaManifest,
    objects: PackReader,
    path: Path,
    from_side: Side,
    on_bytes: OnBytes | None = None,
) -> bool:
    """Turn the checkpoint at ``path`` from ``from_side`` into the other side; False if it
    already was the other side (nothing changed)."""
    if not path.exists():
        raise InvalidCheckpointError(f"{path} does not exist: pass the checkpoint to patch")
    with exclusive_lock(path):
        return _apply_locked(_Apply(manifest, objects, path, from_side, on_bytes))


def _apply_locked(apply: _Apply) -> bool:
    manifest, path = apply.manifest, apply.path
    to_side = apply.to_side
    from_layout, to_layout = manifest.layout(apply.from_side), manifest.layout(to_side)
    from_version, to_version = manifest.version(apply.from_side), manifest.version(to_side)
    if from_layout is None or to_layout is None or from_version is None or to_version is None:
        raise CheckpointError("this delta is an anchor (from nothing): apply it with -o OUT_DIR")
    if from_layout.kind != to_layout.kind:
        raise CheckpointError(
            f"the delta turns a {from_layout.kind} checkpoint into a {to_layout.kind} one, which "
            "cannot be done in place: apply it with -o OUT_DIR"
        )
    direction: Literal["forward", "reverse"] = "forward" if apply.from_side == "base" else "reverse"
    journal = Journal(path)
    state = journal.load()
    plan = _plan(from_layout, to_layout)
    held: dict[str, SparseChanges] = {}
    if state is None:
        journal.discard_leftovers()  # a staging a crash interrupted: nothing to resume
        checkpoint = open_checkpoint(path)
        if not _check_from_side(apply, checkpoint, from_version, to_version):
            return False
        try:
            held = _stage(apply, journal, checkpoint, plan)
        except DeltarollError:
            journal.discard_leftovers()  # refused: the checkpoint was not touched
            raise
        # The base's bytes on disk, not only in the page cache, before the commit: after a power
        # loss a rollback must land on them (cheap when they are clean, as they usually are).
        _fsync_files(apply, plan)
        state = JournalState(
            manifest_digest=manifest.manifest_digest,
            direction=direction,
            from_version=from_version,
            to_version=to_version,
            protocol=UNDO_PROTOCOL,
        )
        journal.save(state)  # the commit point: from here on the checkpoint may change
        crash_point("journal-created")
        tensors = _patched_tensors(apply, plan)
    elif (state.manifest_digest, state.direction) != (manifest.manifest_digest, direction):
        raise InterruptedApplyError(
            f"{path} holds an unfinished in-place apply of another delta or direction "
            f"({state.from_version} -> {state.to_version}, {state.direction}); run that apply "
            f"again to finish it first (journal: {journal.root})"
        )
    else:
        # Resumed: put back what the log holds, then patch again from the base, checking anew.
        tensors = _patched_tensors(apply, plan)
        _roll_back(apply, journal, plan, tensors)
    try:
        _patch(apply, journal, tensors, held)
    except DeltarollError:
        _roll_back(apply, journal, plan, tensors)  # refused: the files as they were
        journal.abandon()
        raise
    crash_point("patched")
    _finish(apply, journal, plan)
    record_side(apply.path, apply.manifest, apply.to_side)
    journal.remove()
    return True


def _check_from_side(
    apply: _Apply, checkpoint: Checkpoint, from_version: str, to_version: str
) -> bool:
    """Prove the checkpoint is the delta's from-side (False: it already is the to-side).

    From the trusted-state record when it still holds (O(tensors), nothing read); otherwise by
    hashing every tensor, which then earns the checkpoint a record of its own.
    """
    trusted = trusted_state(checkpoint)
    if trusted is not None:
        version, digests, files = trusted.version, trusted.tensors, trusted.files
    else:
        digests = checkpoint_digests(checkpoint, apply.on_bytes)
        files = aux_digests(checkpoint)
        version = version_of(checkpoint, digests, files)
    to_layout = apply.layout(apply.to_side)
    if version == to_version and _has_layout(checkpoint, to_layout):
        if trusted is None:
            record_state(checkpoint, version, digests, files)
        return False
    reverse = " (reverse)" if apply.from_side == "target" else ""
    if version != from_version:
        raise WrongBaseError(
            f"{apply.path} is version {version}, but this delta applies to {from_version}"
            f"{reverse}; nothing was changed"
        )
    expected = apply.manifest.tensors.digests(apply.from_side)
    if dict(digests) != expected:
        wrong = sorted(
            n for n in expected.keys() | digests.keys() if expected.get(n) != digests.get(n)
        )
        raise WrongBaseError(
            f"{apply.path} claims version {version} but its tensors {wrong[:3]} differ from the "
            f"delta's {apply.from_side}{reverse}; nothing was changed"
        )
    if not _has_layout(checkpoint, apply.layout(apply.from_side), with_aux=False):
        raise WrongBaseError(
            f"{apply.path} holds the right tensors but not in the file layout the delta expects; "
            "apply it with -o OUT_DIR instead; nothing was changed"
        )
    if trusted is None:
        record_state(checkpoint, version, digests, files)
    return True


def _fsync_files(apply: _Apply, plan: _Plan) -> None:
    kind = apply.layout(apply.to_side).kind
    if not fsync_files({f.name: _weight_path(apply.path, kind, f.name) for f in plan.patched}):
        raise CheckpointError(
            f"{apply.path} could not be written back to disk (an I/O error); nothing was "
            "changed: check the volume, then apply again"
        )


def _plan(from_layout: CheckpointLayout, to_layout: CheckpointLayout) -> _Plan:
    single = from_layout.kind == "file"
    from_files = {("" if single else f.name): f for f in from_layout.files}
    plan = _Plan()
    for file in to_layout.files:
        before = from_files.get("" if single else file.name)
        same = before is not None and before.header_digest == file.header_digest
        (plan.patched if same else plan.rebuilt).append(file)
    to_names = {f.name for f in to_layout.files} | {a.name for a in to_layout.aux_files}
    if not single:
        plan.removed = [f.name for f in from_layout.files if f.name not in to_names]
    return plan


def _weight_path(path: Path, layout_kind: str, name: str) -> Path:
    return path if layout_kind == "file" else child_path(path, name)


def _has_layout(checkpoint: Checkpoint, layout: CheckpointLayout, *, with_aux: bool = True) -> bool:
    """Whether the checkpoint's files carry exactly the layout's headers (and aux files)."""
    if checkpoint.kind != layout.kind or len(checkpoint.weight_files) != len(layout.files):
        return False
    for weight, file in zip(checkpoint.weight_files, layout.files, strict=True):
        if tensor_digest(weight.header.raw) != file.header_digest or (
            layout.kind == "directory" and weight.name != file.name
        ):
            return False
    if with_aux and checkpoint.kind == "directory":
        return set(checkpoint.aux_files) == {a.name for a in layout.aux_files}
    return True


def _stage(
    apply: _Apply, journal: Journal, checkpoint: Checkpoint, plan: _Plan
) -> dict[str, SparseChanges]:
    """Build every rebuilt file in ``staged/`` from the untouched checkpoint, and check that
    every change of the patched files fits its tensor and decodes.

    Returns the decoded sparse change sets while they fit :data:`HELD_CHANGES_BYTES`, so the
    patching need not decode them again."""
    entries = apply.entries
    journal.reset_staged()
    for file in plan.rebuilt:
        names = apply.manifest.names_in(file)
        header = layout_header(file, names, apply.objects, entries, apply.to_side)

        def write_tensor(name: str, out: BinaryIO) -> None:
            write_to_side(
                entries[name], checkpoint, apply.objects, apply.from_side, out, apply.on_bytes
            )

        write_weight_file(journal.staged / file.name, header, write_tensor)
        crash_point("file-staged")
    _stage_aux_files(apply, journal)
    fsync_directory(journal.staged)
    held: dict[str, SparseChanges] = {}
    held_bytes = 0
    for file in plan.patched:
        for name in apply.manifest.names_in(file):
            entry = entries[name]
            if entry.payload is None:
                continue
            ref = checkpoint.tensors[name]
            check_fits(entry, ref, apply.from_side)
            if entry.kind == "dense":
                continue
            changes = sparse_changes(entry, span_of(ref).dtype, apply.objects)
            held_bytes += changes.count * (1 + span_of(ref).dtype.itemsize)
            if held_bytes <= HELD_CHANGES_BYTES:
                held[name] = changes
    return held


def _patch(
    apply: _Apply,
    journal: Journal,
    tensors: dict[str, TensorRef],
    held: dict[str, SparseChanges],
) -> None:
    """Patch every changed tensor of the files that keep their layout, behind the undo log;
    raises (after logging what it wrote) when a tensor's values are not the delta's."""
    entries = apply.entries
    undo = journal.undo_log()
    try:
        for name, ref in tensors.items():
            entry = entries.get(name)
            if entry is None or entry.payload is None:
                continue
            if entry.kind == "dense":
                _patch_dense(apply, undo, entry, ref)
            else:
                _patch_sparse(apply, undo, entry, ref, held.pop(name, None))
            if apply.on_bytes:
                apply.on_bytes(ref.nbytes)
            crash_point("tensor-patched", name)
    finally:
        undo.close()


def _patch_dense(apply: _Apply, undo: UndoLog, entry: TensorEntry, ref: TensorRef) -> None:
    """Almost every element changes: read the tensor whole, log it, apply, check the other
    side's digest, then write it."""
    check_fits(entry, ref, apply.from_side)
    bits = read_tensor_bits(ref)
    undo.append(entry.name, bits, whole=True, first=0)  # written out before bits change
    new = to_side_bits(entry, bits, apply.objects, apply.from_side)
    undo.sync()
    write_whole(span_of(ref), new)


def _patch_sparse(
    apply: _Apply,
    undo: UndoLog,
    entry: TensorEntry,
    ref: TensorRef,
    changes: SparseChanges | None,
) -> None:
    """Patch a sparse tensor window by window, hashing what it reads and writes, and refuse
    (its windows logged) unless the change digest matches."""
    check_fits(entry, ref, apply.from_side)
    span = span_of(ref)
    if changes is None:
        changes = sparse_changes(entry, span.dtype, apply.objects)
    # One thread: the patching's worker hashes while this one resolves (two cores busy).
    hasher = ChangesHasher(span.dtype.itemsize, threads=1)
    from_side, to_side = apply.from_side, apply.to_side

    def on_chunk(positions: np.ndarray, known: np.ndarray, resolved: np.ndarray) -> None:
        hasher.update_positions(positions)
        hasher.update_values(from_side, known)
        hasher.update_values(to_side, resolved)

    try:
        patch_sparse(
            span,
            changes,
            forward=from_side == "base",
            undo=undo,
            tensor=entry.name,
            on_chunk=on_chunk,
        )
    except CodecError as exc:
        raise CorruptDeltaError(
            f"the payload of tensor {entry.name!r} does not apply: {exc}; fetch or recompute "
            "the delta, or restore the checkpoint (it was left as it was)"
        ) from exc
    if hasher.hexdigest() != entry.changes_digest:
        raise changes_mismatch(entry, ref, changes.count, from_side)


def _roll_back(apply: _Apply, journal: Journal, plan: _Plan, tensors: dict[str, TensorRef]) -> None:
    """Write back every value the undo log holds (idempotent), make it durable, empty the
    log. Each record must name a tensor the delta changes, in the form its entry has."""
    records = journal.undo_records()
    if not records:
        return
    entries = apply.entries
    by_tensor: dict[str, list[UndoRecord]] = {}
    for record in records:
        ref = tensors.get(record.tensor)
        entry = entries.get(record.tensor)
        if (
            ref is None
            or entry is None
            or entry.payload is None
            or record.dtype != np.dtype(bits_view(ref.dtype))
            or record.whole != (entry.kind == "dense")
            or record.first + record.count > (ref.numel if record.whole else entry.changed_elements)
            or entry.total_elements != ref.numel
        ):
            raise CheckpointError(
                f"the undo log in {journal.root} names tensor {record.tensor!r}, which this "
                "checkpoint or delta does not hold as recorded; restore the checkpoint from a "
                "snapshot"
            )
        by_tensor.setdefault(record.tensor, []).append(record)
    for name, logged in by_tensor.items():
        span = span_of(tensors[name])
        if entries[name].kind == "dense":
            for record in logged:
                write_whole(_from(span, record.first), record.read())
            continue
        changes = sparse_changes(entries[name], span.dtype, apply.objects)
        try:
            roll_back_sparse(span, changes, logged)
        except CodecError as exc:
            raise CheckpointError(
                f"the undo log in {journal.root} does not fit tensor {name!r} ({exc}); "
                "restore the checkpoint from a snapshot"
            ) from exc
    _fsync_files(apply, plan)
    journal.clear_undo()
    crash_point("rolled-back")


def _from(span: TensorSpan, first: int) -> TensorSpan:
    """The span's elements from ``first`` on."""
    return TensorSpan(
        span.path, span.begin + first * span.dtype.itemsize, span.numel - first, span.dtype
    )


def _patched_tensors(apply: _Apply, plan: _Plan) -> dict[str, TensorRef]:
    """The tensors of the files patched in place, from those files' own headers: a resumed
    apply may find the directory between layouts (shards renamed or removed, the index not yet
    rewritten), which opening the whole checkpoint would refuse."""
    kind = apply.layout(apply.to_side).kind
    tensors: dict[str, TensorRef] = {}
    for file in plan.patched:
        path = _weight_path(apply.path, kind, file.name)
        header = read_header(path)
        if tensor_digest(header.raw) != file.header_digest:
            raise CheckpointError(
                f"{path} no longer has the header the unfinished apply expects; restore the "
                "checkpoint from a snapshot (the agent rebuilds from an anchor)"
            )
        for t in header.tensors:
            tensors[t.name] = TensorRef(
                t.name, t.dtype, t.shape, t.begin, t.end, file=file.name, path=path
            )
    return tensors


def _stage_aux_files(apply: _Apply, journal: Journal) -> None:
    """Build every auxiliary file the target has and the base has not (or has otherwise) in
    ``staged/.aux``, checked against its digest, and check a shard index against the target's
    layout: nothing left to refuse once the apply has committed."""
    from_layout, to_layout = apply.layout(apply.from_side), apply.layout(apply.to_side)
    current = {aux.name: aux.digest for aux in from_layout.aux_files}
    staged = journal.staged / STAGED_AUX
    staged.mkdir()
    for aux in to_layout.aux_files:
        if current.get(aux.name) == aux.digest:
            continue
        data = aux_file_bytes(aux, apply.objects)
        if aux.name == INDEX_NAME:
            _check_index(data, apply.manifest, to_layout)
        write_file_atomically(child_path(staged, aux.name), data)
    fsync_directory(staged)


def _check_index(
    data: bytes | bytearray, manifest: DeltaManifest, layout: CheckpointLayout
) -> None:
    expected = {t: f.name for f in layout.files for t in manifest.names_in(f)}
    try:
        document = json.loads(data)
        weight_map = document.get("weight_map") if isinstance(document, dict) else None
    except ValueError:
        weight_map = None
    if weight_map != expected:
        raise CorruptDeltaError(
            f"the delta's {INDEX_NAME} does not match the layout it describes; it is corrupt: "
            "fetch or recompute it"
        )


def _finish(apply: _Apply, journal: Journal, plan: _Plan) -> None:
    """Idempotent last steps: drop removed files, rename rebuilt and staged auxiliary files in."""
    path = apply.path
    from_layout, to_layout = apply.layout(apply.from_side), apply.layout(apply.to_side)
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
        staged = child_path(journal.staged / STAGED_AUX, aux.name)
        if staged.exists():
            os.replace(staged, child_path(directory, aux.name))
    fsync_directory(directory)
