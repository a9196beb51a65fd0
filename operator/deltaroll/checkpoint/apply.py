"""Applying a delta: checks first (manifest, every object, the base), then write or patch.

Nothing is written before the delta is known to be intact and the checkpoint is known to be its
base (or, for ``reverse``, its target). See :mod:`.apply_out` and :mod:`.apply_inplace`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deltaroll.checkpoint.apply_inplace import apply_in_place
from deltaroll.checkpoint.apply_out import apply_to_directory
from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY, AuxPolicy
from deltaroll.checkpoint.bounds import check_claims, check_limits
from deltaroll.checkpoint.digests import check_version_ids, checkpoint_digests, version_of
from deltaroll.checkpoint.errors import (
    CheckpointError,
    CorruptDeltaError,
    InvalidCheckpointError,
    WrongBaseError,
)
from deltaroll.checkpoint.journal import Journal, JournalState, exclusive_lock
from deltaroll.checkpoint.manifest import DeltaManifest, read_delta_manifest
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.reader import Checkpoint, open_checkpoint
from deltaroll.checkpoint.staging import check_output_free
from deltaroll.checkpoint.state import record_side
from deltaroll.checkpoint.transform import OnBytes, Side, other


@dataclass(frozen=True)
class ApplySummary:
    """What an apply did; ``changed`` is False when the checkpoint already was the result."""

    from_version: str | None
    to_version: str
    output: str
    in_place: bool
    reverse: bool
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_delta(
    base: Path | None,
    delta_dir: Path,
    manifest: DeltaManifest | None = None,
    *,
    out_dir: Path | None = None,
    in_place: bool = False,
    reverse: bool = False,
    on_bytes: OnBytes | None = None,
    aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
    durable: bool = True,
) -> ApplySummary:
    """Apply ``delta_dir`` to ``base`` (its target instead, with ``reverse``).

    Exactly one of ``out_dir`` (write the result there, in its layout) and ``in_place`` (patch
    ``base`` behind a journal). ``base`` is None only for an anchor applied forward.
    ``manifest`` is the delta's manifest where the caller has already parsed and checked the
    bytes it put in ``delta_dir`` (read from there otherwise). The side it produces may ship
    only the auxiliary files ``aux_policy`` allows. ``durable=False`` leaves an in-place
    apply's fsync (and its journal) to :func:`~deltaroll.checkpoint.state.make_durable`.
    """
    if (out_dir is None) == (not in_place):
        raise CheckpointError("choose exactly one of an output directory (-o) or --in-place")
    if not in_place or base is None:
        return _apply(base, delta_dir, manifest, out_dir, reverse, on_bytes, aux_policy, durable)
    if not Path(base).exists():
        raise InvalidCheckpointError(f"{base} does not exist: pass the checkpoint to patch")
    # One in-place apply at a time; its journal is read once, under the lock, for the bounds
    # and for the apply (a journal left by the last apply is finished first).
    with exclusive_lock(Path(base)):
        return _apply(
            base,
            delta_dir,
            manifest,
            out_dir,
            reverse,
            on_bytes,
            aux_policy,
            durable,
            pending=Journal(Path(base)).load(),
        )


def _apply(
    base: Path | None,
    delta_dir: Path,
    manifest: DeltaManifest | None,
    out_dir: Path | None,
    reverse: bool,
    on_bytes: OnBytes | None,
    aux_policy: AuxPolicy,
    durable: bool,
    *,
    pending: JournalState | None = None,
) -> ApplySummary:
    in_place = out_dir is None
    if manifest is None:
        manifest = read_delta_manifest(Path(delta_dir))
    from_side: Side = "target" if reverse else "base"
    check_bounds(manifest, from_side, base, out_dir, in_place=in_place, pending=pending)
    check_version_ids(manifest)
    objects = ObjectDir(Path(delta_dir))
    verify_objects(manifest, objects)
    payload = PackReader(objects, manifest.objects)
    from_version = manifest.version(from_side)
    to_version = manifest.version("base" if reverse else "target")
    if to_version is None:
        raise CheckpointError("this delta is an anchor (from nothing); it cannot be reversed")
    aux_policy.check(manifest, "base" if reverse else "target", payload)
    if (base is None) != (from_version is None):
        raise CheckpointError(
            "this delta is an anchor: apply it without a base"
            if base is not None
            else "this delta needs a base checkpoint to apply to"
        )
    if in_place:
        assert base is not None
        changed = apply_in_place(
            manifest, payload, Path(base), from_side, on_bytes, durable=durable, pending=pending
        )
        output = Path(base)
    else:
        assert out_dir is not None
        output = Path(out_dir)
        check_output_free(output)
        source = open_checkpoint(Path(base)) if base is not None else None
        if source is not None:
            check_is_side(source, manifest, from_side, on_bytes)
        apply_to_directory(manifest, payload, source, output, from_side, on_bytes)
        # Every byte was written from a checked source and checked against the delta: the new
        # copy's first in-place apply need not hash it again.
        record_side(output, manifest, "base" if reverse else "target")
        changed = True
    return ApplySummary(from_version, to_version, str(output), in_place, reverse, changed)


def check_bounds(
    manifest: DeltaManifest,
    from_side: Side,
    base: Path | None,
    out_dir: Path | None,
    *,
    in_place: bool,
    pending: JournalState | None = None,
) -> None:
    """Refuse, before anything is read, allocated or written, a delta whose claims its payload
    cannot hold or whose apply exceeds the memory budget or the free disk. An unfinished apply
    of a refused delta (committed by an older Deltaroll; ``pending``, the checkpoint's journal)
    is not resumed into it."""
    resuming = pending is not None and pending.manifest_digest == manifest.manifest_digest
    try:
        check_claims(manifest, other(from_side))
    except CorruptDeltaError as exc:
        if resuming:
            raise CorruptDeltaError(
                f"{exc}; {base} holds an unfinished apply of this delta, which is not resumed "
                "into it: restore the checkpoint from a snapshot (an agent rebuilds it from an "
                "anchor)"
            ) from exc
        raise
    if not resuming:  # a resumed apply staged what it writes before its commit
        destination = Path(base) if in_place and base is not None else Path(out_dir or ".")
        check_limits(manifest, from_side, destination, in_place=in_place)


def verify_objects(manifest: DeltaManifest, objects: ObjectDir) -> None:
    """Check every object's size and SHA-256 before anything is written."""
    for ref in manifest.objects:
        objects.verify(ref.digest, ref.size)


def check_is_side(
    checkpoint: Checkpoint, manifest: DeltaManifest, side: Side, on_bytes: OnBytes | None = None
) -> None:
    """Refuse a checkpoint that is not ``side`` of the delta (compares version ids)."""
    expected = manifest.version(side)
    actual = version_of(checkpoint, checkpoint_digests(checkpoint, on_bytes))
    if actual != expected:
        raise WrongBaseError(
            f"{checkpoint.path} is version {actual}, but this delta applies to {expected}"
            f"{' (reverse)' if side == 'target' else ''}; nothing was written"
        )
