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
   ``staged/`` from the untouched checkpoint, and every new value for the files that keep their
   layout is computed, checked and written to the redo log (``changes.bin``, fsynced). Nothing
   in the checkpoint has changed; a refusal or a crash here leaves it as it was.
2. commit: the journal's ``state.json`` is written. From here on the apply always finishes, and
   the trusted-state record is not trusted while the journal is there.
3. patching and finishing: the redo log is written into the files (idempotent), removed files
   go, staged files are renamed in (the directory fsynced), auxiliary files rewritten; then a new
   record vouches for the target.
4. durability: the files the redo log wrote into are fsynced, and only then is the journal
   dropped, so a power loss finds either the journal (and replays it) or the target on disk.
   With ``durable=False`` (the agent, whose engine reloads first) the journal stays until
   :func:`~deltaroll.checkpoint.state.make_durable` does this off the pause path; the record it
   wrote in this boot proves the patching finished, and the next apply does it first.

fsyncs: the files written, before the commit (the base under the redo log) and after the
patching, and the journal's own files and folders: O(files touched), not O(files). A folder is
fsynced only where a file in it was created, renamed or removed: each such fsync waits for a
journal commit of the whole file system.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from deltaroll.checkpoint.changeset import (
    CheckedChanges,
    checked_changes,
    span_of,
    sparse_changes,
)
from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.dense_change import dense_windows
from deltaroll.checkpoint.digests import aux_digests, checkpoint_digests, tensor_digest, version_of
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import (
    CheckpointError,
    CorruptDeltaError,
    InterruptedApplyError,
    WrongBaseError,
)
from deltaroll.checkpoint.header import read_header
from deltaroll.checkpoint.journal import Journal, JournalState, LoggedValues
from deltaroll.checkpoint.manifest import CheckpointLayout, DeltaManifest, WeightFileLayout
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.materialize import write_to_side
from deltaroll.checkpoint.names import child_path
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import INDEX_NAME, Checkpoint, TensorRef, open_checkpoint
from deltaroll.checkpoint.scatter import ValueSource, scatter, write_whole
from deltaroll.checkpoint.staging import fsync_directory, write_file_atomically
from deltaroll.checkpoint.state import (
    fingerprints_trustworthy,
    finish_durably,
    forget_state,
    fsync_files,
    make_pending_durable,
    mark_durable,
    record_side,
    record_state,
    trusted_state,
)
from deltaroll.checkpoint.transform import OnBytes, Side, aux_file_bytes, other
from deltaroll.checkpoint.writer import layout_header, write_weight_file
from deltaroll.codec.gaps import PositionCursor
from deltaroll.errors import DeltarollError

# Where auxiliary files are staged, beside the rebuilt weight files (a name no file can have).
STAGED_AUX = ".aux"
# New sparse values kept in memory between staging and patching (beyond it: read back from the
# log, a chunk at a time): a few tensors' worth, so peak memory stays one tensor's change set.
HELD_CHANGES_BYTES = 32 << 20


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
    durable: bool
    pending: JournalState | None  # the journal as the caller read it under the lock

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
    *,
    durable: bool = True,
    pending: JournalState | None = None,
) -> bool:
    """Turn the checkpoint at ``path`` from ``from_side`` into the other side; False if it
    already was the other side (nothing changed). ``durable=False`` returns before the patched
    files are fsynced, keeping the journal until :func:`make_durable` (see step 4 above).

    The caller holds :func:`~deltaroll.checkpoint.journal.exclusive_lock` on ``path`` and
    passes the journal it read under it as ``pending``."""
    return _apply_locked(_Apply(manifest, objects, path, from_side, on_bytes, durable, pending))


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
    journal, state = Journal(path), apply.pending
    if state is not None and make_pending_durable(path, state):
        state = None  # the last apply finished and left this for later: done, journal gone
    plan = _plan(from_layout, to_layout)
    written = _written_files(apply, plan)
    staged: _Staged | None = None
    checkpoint: Checkpoint | None = None  # opened (headers parsed) once, unless resuming
    if state is None:
        journal.discard_leftovers()  # a staging a crash interrupted: nothing to resume
        checkpoint = open_checkpoint(path)
        if not _check_from_side(apply, checkpoint, from_version, to_version):
            return False
        try:
            staged = _stage(apply, journal, checkpoint, plan)
        except DeltarollError:
            journal.discard_leftovers()  # refused: the checkpoint was not touched
            raise
        # The base's bytes on disk, not only in the page cache, before the commit: after a power
        # loss the redo log must land on them (cheap when they are clean, as they usually are).
        if not fsync_files(written):
            raise CheckpointError(
                f"{path} could not be written back to disk (an I/O error); nothing was "
                "changed: check the volume, then apply again"
            )
        state = JournalState(
            manifest_digest=manifest.manifest_digest,
            direction=direction,
            from_version=from_version,
            to_version=to_version,
            written=tuple(written),
        )
        journal.save(state)  # the commit point: from here on the apply always finishes
        crash_point("journal-created")
    elif (state.manifest_digest, state.direction) != (manifest.manifest_digest, direction):
        raise InterruptedApplyError(
            f"{path} holds an unfinished in-place apply of another delta or direction "
            f"({state.from_version} -> {state.to_version}, {state.direction}); run that apply "
            f"again to finish it first (journal: {journal.root})"
        )
    # Everything below is idempotent: a crash anywhere is finished by running the apply again.
    _patch(apply, journal, _patched_tensors(apply, plan, checkpoint), staged)
    crash_point("patched")
    _finish(apply, journal, plan)
    same_files = checkpoint is not None and _keeps_files(apply, plan)
    record_side(apply.path, apply.manifest, apply.to_side, checkpoint if same_files else None)
    # Without a record (a file system whose fingerprints prove nothing) no later step could
    # tell this apply finished: it is made durable now.
    if apply.durable or not fingerprints_trustworthy(path):
        _make_durable_now(apply, written)
    return True


def _make_durable_now(apply: _Apply, written: dict[str, Path]) -> None:
    if not finish_durably(apply.path, written):
        forget_state(apply.path)
        raise CheckpointError(
            f"{apply.path} could not be written back to disk (an I/O error); its journal is "
            "kept: check the volume, then apply again (it writes every value again)"
        )
    mark_durable(apply.path)


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


def _written_files(apply: _Apply, plan: _Plan) -> dict[str, Path]:
    """The weight files the redo log writes into (by the name the checkpoint lists them
    under): those kept in place that hold a changed tensor."""
    kind, entries = apply.layout(apply.to_side).kind, apply.entries
    paths = (
        _weight_path(apply.path, kind, file.name)
        for file in plan.patched
        if any(entries[name].payload is not None for name in apply.manifest.names_in(file))
    )
    return {path.name: path for path in paths}


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


# Sparse tensors' new values, checked, kept from staging for the patching (dense ones never
# are: they are as large as their tensors, and go through the log a window at a time).
_Held = dict[str, CheckedChanges]
# What staging hands the patching: the values held, or the redo log's records it just wrote.
_Staged = _Held | list[LoggedValues]


def _stage(apply: _Apply, journal: Journal, checkpoint: Checkpoint, plan: _Plan) -> _Staged:
    """Build every rebuilt file in ``staged/`` and the redo log, from the untouched checkpoint.

    Returns what the patching that follows in this process writes: the new values themselves
    while every change is sparse and they fit :data:`HELD_CHANGES_BYTES`, else the log's
    records as written (read a range at a time, not checked against the log's digest again)."""
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
    if _moves_files(apply, plan):  # else nothing is staged: no folder to make durable
        fsync_directory(journal.staged)
    held: _Held | None = {}
    held_bytes = 0
    with journal.changes_writer() as log:
        for file in plan.patched:
            for name in apply.manifest.names_in(file):
                entry = entries[name]
                if entry.payload is None:
                    continue
                ref = checkpoint.tensors[name]
                if entry.kind == "dense":
                    # Almost every element changes: the new tensor, checked against the other
                    # side's digest, goes to the log a window at a time.
                    windows = dense_windows(
                        entry, ref, apply.objects, apply.from_side, check_from=False
                    )
                    dtype = np.dtype(bits_view(ref.dtype))
                    log.add_chunks(name, dtype, ref.numel, windows, whole=True)
                    held = None
                else:
                    change = checked_changes(entry, ref, apply.objects, apply.from_side)
                    log.add(name, change.values, whole=False)
                    held_bytes += change.nbytes
                    held = held if held is not None and held_bytes <= HELD_CHANGES_BYTES else None
                    if held is not None:
                        held[name] = change
                if apply.on_bytes:
                    apply.on_bytes(ref.nbytes)
                crash_point("tensor-staged", name)
    return held if held is not None else log.records


# What the patching writes into one tensor: the whole tensor's new values, or new values at
# positions.
_Writes = ValueSource | tuple[PositionCursor, ValueSource]


def _patch(
    apply: _Apply, journal: Journal, tensors: dict[str, TensorRef], staged: _Staged | None
) -> None:
    """Write every new value of the redo log (or the same values, still held) into the
    checkpoint; idempotent. Without ``staged`` (a resumed apply) the log is read from disk and
    checked against its digest first."""
    if isinstance(staged, dict):
        writes: Iterator[tuple[str, _Writes]] = (
            (name, _held_writes(change)) for name, change in staged.items()
        )
    else:
        records = staged if staged is not None else journal.changes()
        writes = _logged_writes(apply, journal.root, records, tensors)
    for name, write in writes:
        span = span_of(tensors[name])
        if isinstance(write, tuple):
            scatter(span, *write, name)
        else:
            write_whole(span, write)
        crash_point("tensor-patched", name)


def _held_writes(change: CheckedChanges) -> _Writes:
    values = change.values

    def held_values(first: int, count: int) -> np.ndarray:
        return values[first : first + count]

    return change.positions(), held_values


def _logged_writes(
    apply: _Apply, log: Path, records: list[LoggedValues], tensors: dict[str, TensorRef]
) -> Iterator[tuple[str, _Writes]]:
    """The redo log's records, every one checked against the tensor and the entry it names
    before the first is written; the positions of a sparse record are its entry's payload's."""
    entries = apply.entries
    for record in records:
        ref = tensors.get(record.tensor)
        entry = entries.get(record.tensor)
        if (
            ref is None
            or entry is None
            or record.dtype != np.dtype(bits_view(ref.dtype))
            or record.whole != (entry.kind == "dense")
            or record.count != (ref.numel if record.whole else entry.changed_elements)
            or entry.total_elements != ref.numel
        ):
            raise CheckpointError(
                f"the redo log in {log} names tensor {record.tensor!r}, which this "
                "checkpoint or delta does not hold as recorded; restore the checkpoint from a "
                "snapshot"
            )
    for record in records:
        if record.whole:
            yield record.tensor, record.read
        else:
            changes = sparse_changes(entries[record.tensor], record.dtype, apply.objects)
            yield record.tensor, (changes.positions(), record.read)


def _keeps_files(apply: _Apply, plan: _Plan) -> bool:
    """Whether the apply left the same files (weight and auxiliary) under the same names: the
    checkpoint opened before it then still lists them as they are."""
    names = [{a.name for a in apply.layout(side).aux_files} for side in ("base", "target")]
    return not plan.rebuilt and not plan.removed and names[0] == names[1]


def _patched_tensors(
    apply: _Apply, plan: _Plan, checkpoint: Checkpoint | None
) -> dict[str, TensorRef]:
    """The tensors of the files patched in place: from ``checkpoint`` when this apply opened it
    (its headers were checked against the delta's layout), else from those files' own headers:
    a resumed apply may find the directory between layouts (shards renamed or removed, the
    index not yet rewritten), which opening the whole checkpoint would refuse."""
    if checkpoint is not None:
        patched = {file.name for file in plan.patched}
        single = checkpoint.kind == "file"
        return {
            name: ref for name, ref in checkpoint.tensors.items() if single or ref.file in patched
        }
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
    changed = [aux for aux in to_layout.aux_files if current.get(aux.name) != aux.digest]
    for aux in changed:
        data = aux_file_bytes(aux, apply.objects)
        if aux.name == INDEX_NAME:
            _check_index(data, apply.manifest, to_layout)
        write_file_atomically(child_path(staged, aux.name), data)
    if changed:
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
    if _moves_files(apply, plan):
        fsync_directory(directory)


def _moves_files(apply: _Apply, plan: _Plan) -> bool:
    """Whether the apply renames or removes any file of the checkpoint (in this run or in one a
    crash stopped): only then has its directory anything to make durable. An apply that only
    patches files in place skips that fsync, which waits for a journal commit of the whole
    file system (0.2 s behind other write-back)."""
    aux = [
        {(a.name, a.digest) for a in apply.layout(side).aux_files} for side in ("base", "target")
    ]
    return bool(plan.rebuilt or plan.removed or aux[0] != aux[1])
