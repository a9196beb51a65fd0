"""The trusted-state record: what a checkpoint was last proven to hold, so the next apply need
not read it all again.

After an apply or a materialization that verified every byte it wrote (or a full hash), the
record beside the journal (``<dir>/.deltaroll-state.json``, ``.<file>.deltaroll-state.json``
beside a single file) names the version, every tensor's and auxiliary file's digest, and a
fingerprint of each file: ``st_dev``, ``st_ino``, ``st_size``, ``st_mtime_ns``, ``st_ctime_ns``,
plus the kernel's boot id. The next apply trusts the record only if all of it still holds:

- any write to a file moves its ctime (which no user can set), a replaced file has another
  inode, so a record that matches the files vouches for bytes nobody touched since;
- another boot id means an unclean shutdown may have dropped dirty pages: the record is void;
- on file systems where these fields prove nothing (NFS, FUSE, SMB, 9p, Ceph, ...) a record is
  never trusted and every apply hashes in full;
- a record written after a patch says ``durable: false`` until the patched files are fsynced
  (:func:`make_durable`, off the pause path); an apply that meets such a record fsyncs first,
  and a write-back error (EIO) voids the record rather than vouching for lost bytes. An apply
  that leaves durability for later (the agent's) keeps its journal until then: a power loss
  before the fsync finds the redo log and replays it, never a file that is neither version.

The record checks its own digest, so an edit by hand (that does not also recompute it) is caught;
a record that fails any check is ignored, never an error: the apply falls back to a full hash.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

import blake3
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from deltaroll.checkpoint.crashpoints import crash_point
from deltaroll.checkpoint.journal import Journal, JournalState
from deltaroll.checkpoint.manifest import DeltaManifest
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint
from deltaroll.checkpoint.staging import fsync_directory, fsync_path, write_file_atomically

log = structlog.get_logger(__name__)

Side = Literal["base", "target"]

SCHEMA: Final = "deltaroll.state/v1"
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
MOUNTINFO_PATH = Path("/proc/self/mountinfo")
# File systems whose inode numbers, sizes and times do not prove the bytes are untouched:
# another client may write without moving them, or the server may report its own view.
UNTRUSTED_FS_PREFIXES = (
    "nfs",
    "fuse",
    "cifs",
    "smb",
    "9p",
    "ceph",
    "glusterfs",
    "lustre",
    "virtiofs",
)


class FileFingerprint(BaseModel):
    """What ``stat`` says of one file; any write or replacement changes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


class TrustedState(BaseModel):
    """A checkpoint's last proven state (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["deltaroll.state/v1"] = SCHEMA
    version: str
    tensors: dict[str, str]
    files: dict[str, str]
    fingerprints: dict[str, FileFingerprint]
    boot_id: str
    durable: bool
    record_digest: str = ""


def state_path(checkpoint_path: Path) -> Path:
    if checkpoint_path.is_dir():
        return checkpoint_path / ".deltaroll-state.json"
    return checkpoint_path.parent / f".{checkpoint_path.name}.deltaroll-state.json"


def boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (longest mount point that contains it)."""
    target = str(Path(path).resolve())
    best, best_type = "", ""
    try:
        lines = MOUNTINFO_PATH.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        mount_point = parts[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, rest.split()[0]
    return best_type


def fingerprints_trustworthy(path: Path) -> bool:
    """Whether stat fields on this file system prove that a file was not written."""
    fs_type = filesystem_type(path)
    return bool(fs_type) and not fs_type.startswith(UNTRUSTED_FS_PREFIXES)


def _files(checkpoint: Checkpoint) -> dict[str, Path]:
    files = {weight.name: weight.path for weight in checkpoint.weight_files}
    files.update(checkpoint.aux_files)
    return files


def _fingerprint(path: Path) -> FileFingerprint:
    st = os.stat(path)
    return FileFingerprint(
        dev=st.st_dev,
        ino=st.st_ino,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
    )


def _digest(state: TrustedState) -> str:
    body = state.model_copy(update={"record_digest": ""}).model_dump_json(by_alias=True)
    return blake3.blake3(body.encode()).hexdigest()


def _write(checkpoint_path: Path, state: TrustedState) -> None:
    """Replace the record atomically, without fsync: a record lost in a crash costs one full
    hash, and one from before a restart is void anyway (another boot id)."""
    sealed = state.model_copy(update={"record_digest": _digest(state)})
    write_file_atomically(
        state_path(checkpoint_path), sealed.model_dump_json().encode(), durable=False
    )


def record_state(
    checkpoint: Checkpoint, version: str, tensors: Mapping[str, str], files: Mapping[str, str]
) -> None:
    """Vouch that ``checkpoint`` (as it is now on disk) holds ``version`` with these digests.

    Call only after every byte was verified or written from verified data. The record starts
    ``durable: false``; :func:`make_durable` completes it.
    """
    if not fingerprints_trustworthy(checkpoint.path):
        return
    state = TrustedState(
        version=version,
        tensors=dict(tensors),
        files=dict(files),
        fingerprints={name: _fingerprint(p) for name, p in _files(checkpoint).items()},
        boot_id=boot_id(),
        durable=False,
    )
    _write(checkpoint.path, state)
    crash_point("state-recorded")


def record_side(
    checkpoint_path: Path,
    manifest: DeltaManifest,
    side: Side,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Vouch that the checkpoint just written or patched is ``side`` of ``manifest``: call only
    when every byte came from a checked base and a checked delta. ``checkpoint``: the same
    checkpoint as opened before a patching that kept its files (its headers are not read
    again)."""
    version, layout = manifest.version(side), manifest.layout(side)
    assert version is not None and layout is not None  # the side an apply produced
    tensors = manifest.tensors.digests(side)
    files = {aux.name: aux.digest for aux in layout.aux_files}
    record_state(checkpoint or open_checkpoint(checkpoint_path), version, tensors, files)


def forget_state(checkpoint_path: Path) -> None:
    """Remove the record before the checkpoint is changed, so no crash leaves it vouching."""
    path = state_path(checkpoint_path)
    if path.exists():
        path.unlink()
        fsync_directory(path.parent)


def load_state(checkpoint_path: Path) -> TrustedState | None:
    """The record as written, its seal checked and nothing else (None if absent or altered).

    :func:`trusted_state` adds the checks that let an apply skip reading the files; the agent's
    scrub wants only the digests, because it compares them with the bytes themselves."""
    path = state_path(checkpoint_path)
    try:
        state = TrustedState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("checkpoint.state_unreadable", path=str(path), error=str(exc)[:200])
        return None
    if state.record_digest != _digest(state):
        log.warning("checkpoint.state_altered", path=str(path))
        return None
    return state


def trusted_state(checkpoint: Checkpoint) -> TrustedState | None:
    """The record of ``checkpoint`` if every check holds (see the module docstring), else None."""
    state = load_state(checkpoint.path)
    if state is None:
        return None
    why = _distrust(checkpoint, state)
    if why:
        log.info("checkpoint.state_ignored", path=str(checkpoint.path), why=why)
        return None
    if not state.durable:
        if not make_durable(checkpoint.path, checkpoint):
            return None
        state = state.model_copy(update={"durable": True})
    return state


def _distrust(checkpoint: Checkpoint, state: TrustedState) -> str:
    if Journal(checkpoint.path).pending():
        return "an in-place apply is unfinished"
    return _stale(checkpoint, state)


def _stale(checkpoint: Checkpoint, state: TrustedState) -> str:
    """Why the record no longer describes the files as they are in this boot ("" if it does)."""
    if not fingerprints_trustworthy(checkpoint.path):
        return f"file system {filesystem_type(checkpoint.path)!r} cannot prove files unchanged"
    if state.boot_id != boot_id() or not state.boot_id:
        return "the machine restarted since the record was written"
    files = _files(checkpoint)
    if files.keys() != state.fingerprints.keys():
        return "files were added or removed"
    for name, path in files.items():
        if _fingerprint(path) != state.fingerprints[name]:
            return f"{name} was written or replaced"
    if set(checkpoint.tensors) != set(state.tensors) or set(checkpoint.aux_files) != set(
        state.files
    ):
        return "the record lists other tensors or files"
    return ""


def fsync_files(files: Mapping[str, Path]) -> bool:
    """fsync each file; False (logged) at the first write-back error."""
    for name, path in files.items():
        try:
            fsync_path(path)
        except OSError as exc:
            log.warning("checkpoint.writeback_failed", file=name, error=exc.strerror)
            return False
    return True


def make_durable(checkpoint_path: Path, checkpoint: Checkpoint | None = None) -> bool:
    """fsync what the last apply wrote, drop its journal and mark its record durable.

    An in-place apply that left this for later (off the pause path) kept its journal; its
    record, written once the patching finished, in this boot, over files it still matches, is
    what proves the apply finished. False if no record proves that or matches the files (an
    apply a crash interrupted: running it again finishes it), or write-back failed (then the
    record is removed and a journal stays, so the apply run again writes every value again)."""
    return make_pending_durable(checkpoint_path, Journal(checkpoint_path).load(), checkpoint)


def make_pending_durable(
    checkpoint_path: Path, pending: JournalState | None, checkpoint: Checkpoint | None = None
) -> bool:
    """:func:`make_durable` with the journal the caller already read (under the apply's lock)."""
    state = load_state(checkpoint_path)
    if state is None:
        return False
    if pending is not None and pending.to_version != state.version:
        return False  # the record is the base's: the patching never finished
    checkpoint = checkpoint or open_checkpoint(checkpoint_path)
    if _stale(checkpoint, state):
        return False
    if state.durable and pending is None:
        return True
    files = _files(checkpoint)
    if pending is not None and pending.written is not None:
        files = {name: files[name] for name in pending.written if name in files}
    if not finish_durably(checkpoint_path, files):
        forget_state(checkpoint_path)
        return False
    mark_durable(checkpoint_path)
    return True


def mark_durable(checkpoint_path: Path) -> None:
    """Mark the record durable once the caller fsynced what the record vouches for."""
    state = load_state(checkpoint_path)
    if state is not None and not state.durable:
        _write(checkpoint_path, state.model_copy(update={"durable": True}))


def finish_durably(checkpoint_path: Path, written: Mapping[str, Path]) -> bool:
    """fsync the files an apply wrote in place, then (only then) drop its journal: a power loss
    before the journal's removal replays its redo log, after it finds the values on disk.
    Renamed-in files and the directory were fsynced when they moved. False (journal kept) at a
    write-back error."""
    if not fsync_files(written):
        return False
    crash_point("apply-durable")
    journal = Journal(checkpoint_path)
    if journal.pending():
        journal.remove()
    return True


def proven_version(checkpoint_path: Path) -> str:
    """The checkpoint's version: from its record when that still holds (nothing read), else
    from a full hash, which then earns it a record (so the next apply reads only what changes)."""
    from deltaroll.checkpoint.digests import aux_digests, checkpoint_digests, version_of

    checkpoint = open_checkpoint(checkpoint_path)
    trusted = trusted_state(checkpoint)
    if trusted is not None:
        return trusted.version
    digests, files = checkpoint_digests(checkpoint), aux_digests(checkpoint)
    version = version_of(checkpoint, digests, files)
    record_state(checkpoint, version, digests, files)
    return version
