"""Scatter a verified delta into the parameters of every rank of one engine, all or nothing.

Each rank of a tensor- or pipeline-parallel engine holds a slice of some tensors and none of
others, but a change set is checked (and a sparse payload resolved) against the base values at
*all* its positions. So, tensor by tensor, in the manifest's order (the same on every rank):
each rank gathers the base values it holds at the changed positions, one ``all_reduce(MAX)``
over the world group gives every rank every value (a rank that holds a position contributes
it, the others a sentinel; replicas must agree, which the minimum, reduced in the same call,
proves), every rank checks the ``changes_digest`` and computes the targets, and keeps the
writes of its own slice. Nothing is written until every rank has checked every tensor; a rank
that fails tells the others through the same reduction and all stop at the same tensor. Writes
keep the old values, and a failure while writing (one rank) undoes them on every rank. Memory
and collectives grow with the changed elements, never with the model.

Refused before anything is read (the agent reloads from disk, the reason goes to the pod's
status): a layout change (tensors added, removed, reshaped or recast; auxiliary files changed),
a tensor no rank holds, and what :mod:`~deltaroll.engines.extension.layout` cannot place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deltaroll.api.engine_patch import PatchRequest, PatchResult
from deltaroll.checkpoint.apply import verify_objects
from deltaroll.checkpoint.changeset import sparse_changes
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.manifest import DeltaManifest, read_delta_manifest
from deltaroll.checkpoint.manifest_tensors import TensorEntry
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.transform import check_from_bits, to_side_bits
from deltaroll.codec import ChangesHasher, CodecError, SparseChanges
from deltaroll.codec.gaps import gaps_to_positions
from deltaroll.engines.extension.layout import ModelLayout, NotPlaceable, Region
from deltaroll.engines.weights_identity import SAFETENSORS_DTYPE_NAMES

if TYPE_CHECKING:
    import torch

#: ``all_reduce(MAX)`` of an int64 tensor over every rank, in place; None in a single process.
ReduceMax = Callable[["torch.Tensor"], None]

_NOT_HELD = -1  # a base value no rank holds (bits are unsigned, at most 63 bits here)
_OK, _FALLBACK, _FAILED = 0, 1, 2


class Fallback(Exception):
    """The delta cannot be applied in memory; the disk reload will (nothing was written)."""


class _Mixed(Exception):
    """Writing failed and so did putting the old values back: the weights are a mix."""


class Refused(Exception):
    """The delta does not apply to what the engine serves (wrong base, corrupt delta)."""


@dataclass
class _Write:
    """One rank's scatter into one region: where, the old values and the new ones."""

    target: torch.Tensor  # a flat, integer view of the region's bits
    where: torch.Tensor  # int64 positions in ``target``
    old: torch.Tensor
    new: torch.Tensor


@dataclass
class _Plan:
    writes: list[_Write] = field(default_factory=list)
    tensors: int = 0
    elements: int = 0
    bytes: int = 0


def patch_in_memory(
    model: torch.nn.Module, request: PatchRequest, *, rank: int, reduce_max: ReduceMax | None
) -> PatchResult:
    """Apply ``request``'s delta to ``model`` on this rank, in step with every other rank (each
    calls this with the same request; ``reduce_max`` reduces over all of them). Never raises:
    the answer says what happened, and a rank that raised would leave the others waiting."""
    started = time.monotonic()
    status, reason, plan = _OK, "", _Plan()
    try:
        manifest = _read_checked(request)
    except Fallback as exc:
        status, reason, manifest = _FALLBACK, str(exc), None
    except (Refused, CheckpointError) as exc:
        status, reason, manifest = _FAILED, str(exc), None
    except Exception as exc:  # noqa: BLE001 - any error must reach the vote
        status, reason, manifest = _FAILED, f"{type(exc).__name__}: {exc}", None
    status = _vote(status, reduce_max)
    if status == _OK and manifest is not None:
        status, reason, plan = _plan(model, request, manifest, reduce_max)
    kept = True
    if status == _OK:
        try:
            status, reason = _write(plan, reduce_max)
        except _Mixed as exc:
            status, reason, kept = _FAILED, str(exc), False
    if status != _OK and not reason:
        reason = _peer_reason(status)
    outcome = {_OK: "applied", _FALLBACK: "fallback", _FAILED: "failed"}[status]
    applied = status == _OK
    return PatchResult(
        request_id=request.request_id,
        rank=rank,
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        tensors=plan.tensors if applied else 0,
        elements=plan.elements if applied else 0,
        bytes_applied=plan.bytes if applied else 0,
        old_weights_kept=kept,
        seconds=time.monotonic() - started,
    )


def _read_checked(request: PatchRequest) -> DeltaManifest:
    """The delta's manifest, with its objects checked and its layout unchanged."""
    delta_dir = Path(request.delta_dir)
    manifest = read_delta_manifest(delta_dir)
    if (manifest.base_version, manifest.target_version) != (
        request.base_version,
        request.target_version,
    ):
        raise Refused(
            f"the delta in {delta_dir} leads from {manifest.base_version} to "
            f"{manifest.target_version}, not from {request.base_version} to "
            f"{request.target_version}"
        )
    verify_objects(manifest, ObjectDir(delta_dir))
    for entry in manifest.tensors:
        if entry.kind == "carried" or entry.base is None or entry.target is None:
            raise Fallback(f"layout change: tensor {entry.name} is added, removed or replaced")
        if (entry.base.dtype, entry.base.shape) != (entry.target.dtype, entry.target.shape):
            raise Fallback(f"layout change: tensor {entry.name} changes dtype or shape")
    base, target = manifest.layout("base"), manifest.layout("target")
    base_aux = {a.name: a.digest for a in base.aux_files} if base else {}
    target_aux = {a.name: a.digest for a in target.aux_files} if target else {}
    if base_aux != target_aux:
        changed = sorted(set(base_aux.items()) ^ set(target_aux.items()))[0][0]
        raise Fallback(f"layout change: auxiliary file {changed} changes (config or tokenizer)")
    return manifest


def _plan(
    model: torch.nn.Module,
    request: PatchRequest,
    manifest: DeltaManifest,
    reduce_max: ReduceMax | None,
) -> tuple[int, str, _Plan]:
    """Check every changed tensor with the other ranks and stage this rank's writes."""
    layout = ModelLayout(model)
    objects = PackReader(ObjectDir(Path(request.delta_dir)), manifest.objects)
    plan = _Plan()
    status, reason = _OK, ""
    for entry in manifest.tensors:
        if entry.kind == "unchanged":
            continue
        region, changes, positions, held = None, None, None, None
        try:
            region = _region(layout, entry)
            changes, positions = _decode(entry, objects)
            held = _gather(region, positions)
        except Fallback as exc:
            status, reason = _FALLBACK, str(exc)
        except Exception as exc:  # noqa: BLE001 - any error must reach the vote
            status, reason = _FAILED, _say(entry, exc)
        count = entry.total_elements if entry.kind == "dense" else entry.changed_elements
        status, base_bits, why = _exchange(held, count, status, reduce_max)
        if status != _OK:
            return status, reason or why.format(name=entry.name), plan
        assert positions is not None and base_bits is not None and entry.base is not None
        base_bits = base_bits.astype(bits_view(entry.base.dtype))
        try:
            targets = _targets(entry, objects, changes, positions, base_bits)
            if region is not None:
                _stage(plan, region, positions, base_bits, targets)
        except Refused as exc:
            status, reason = _FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - any error must reach the vote
            status, reason = _FAILED, _say(entry, exc)
        status = _vote(status, reduce_max)
        if status != _OK:
            return status, reason or _peer_reason(status), plan
    return _OK, "", plan


def _region(layout: ModelLayout, entry: TensorEntry) -> Region | None:
    assert entry.base is not None  # checked in _read_checked
    try:
        return layout.region(entry.name, entry.base.dtype, tuple(entry.base.shape))
    except NotPlaceable as exc:
        raise Fallback(str(exc)) from exc


def _decode(entry: TensorEntry, objects: PackReader) -> tuple[SparseChanges | None, np.ndarray]:
    """A sparse payload, decoded, and the changed positions, ascending (every position of a
    dense tensor, whose payload is applied whole)."""
    if entry.kind == "dense":
        return None, np.arange(entry.total_elements, dtype=np.int64)
    assert entry.base is not None
    changes = sparse_changes(entry, np.dtype(bits_view(entry.base.dtype)), objects)
    return changes, gaps_to_positions(changes.gaps, changes.total)


@dataclass
class _Held:
    """This rank's base values at the positions it holds (``mask``), from ``region``."""

    region: Region
    mask: np.ndarray
    local: torch.Tensor  # positions in the region's flat tensor
    values: np.ndarray  # unsigned bits


def _gather(region: Region | None, positions: np.ndarray) -> _Held | None:
    if region is None:
        return None
    import torch

    mask, local = region.placement.local_positions(positions)
    flat = _bits(region.tensor())
    if flat.element_size() > 4:
        raise Fallback(f"{region.placement.param} has 64-bit elements, which are not exchanged")
    where = torch.from_numpy(local).to(flat.device)
    values = flat.index_select(0, where).cpu().numpy()
    unsigned = values.view(np.dtype(f"u{values.dtype.itemsize}"))
    return _Held(region, mask, where, unsigned)


def _exchange(
    held: _Held | None, count: int, status: int, reduce_max: ReduceMax | None
) -> tuple[int, np.ndarray | None, str]:
    """Every rank's base values at every position, and the worst status of any rank (with a
    reason to format with the tensor's name); one reduction of
    ``[status, max values, -min values]``."""
    import torch

    buffer = torch.full((1 + 2 * count,), _NOT_HELD, dtype=torch.int64)
    buffer[0] = status
    buffer[1 + count :] = -(2**62)
    if held is not None and status == _OK:
        mask = torch.from_numpy(held.mask)
        values = torch.from_numpy(held.values.astype(np.int64))
        buffer[1 : 1 + count][mask] = values
        buffer[1 + count :][mask] = -values
    if reduce_max is not None:
        reduce_max(buffer)
    status = int(buffer[0])
    if status != _OK:
        return status, None, _peer_reason(status)
    high, low = buffer[1 : 1 + count].numpy(), -buffer[1 + count :].numpy()
    if (high == _NOT_HELD).all():
        return _FALLBACK, None, "no rank of the engine holds tensor {name} (not loaded, renamed)"
    if (high == _NOT_HELD).any():
        return _FAILED, None, "the ranks of the engine hold only part of tensor {name}"
    if (high != low).any():
        return _FAILED, None, "the ranks' copies of tensor {name} differ; reload the weights"
    return _OK, high, ""


def _targets(
    entry: TensorEntry,
    objects: PackReader,
    changes: SparseChanges | None,
    positions: np.ndarray,
    base: np.ndarray,
) -> np.ndarray:
    """The target bits at ``positions``, refusing a base the delta was not made from."""
    bits = base
    if changes is None:  # dense: the whole tensor, checked against both sides' digests
        try:
            check_from_bits(entry, bits, "base")
            return to_side_bits(entry, bits.copy(), objects, "base")
        except CheckpointError as exc:
            raise Refused(f"{exc}; the engine does not serve the delta's base version") from exc
    hasher = ChangesHasher(bits.dtype.itemsize)
    hasher.update_positions(positions)
    hasher.update_values("base", bits)
    targets = bits.copy()
    try:
        changes.resolve(targets, forward=True)
    except CodecError as exc:
        raise Refused(
            f"tensor {entry.name}: the served values do not fit the delta ({exc}); the engine "
            "does not serve the delta's base version"
        ) from exc
    hasher.update_values("target", targets)
    if hasher.hexdigest() != entry.changes_digest:
        raise Refused(
            f"tensor {entry.name}: the served values at its {positions.shape[0]} changed "
            "positions are not the ones the delta was made from; the engine does not serve the "
            "delta's base version"
        )
    return targets


def _stage(
    plan: _Plan, region: Region, positions: np.ndarray, base: np.ndarray, targets: np.ndarray
) -> None:
    import torch

    mask, local = region.placement.local_positions(positions)
    changed = base[mask] != targets[mask]
    flat = _bits(region.tensor())
    signed = flat.dtype
    where = torch.from_numpy(local[changed]).to(flat.device)
    old = torch.from_numpy(_signed(base[mask][changed], signed)).to(flat.device)
    new = torch.from_numpy(_signed(targets[mask][changed], signed)).to(flat.device)
    plan.writes.append(_Write(flat, where, old, new))
    plan.tensors += 1
    plan.elements += int(where.shape[0])
    plan.bytes += int(where.shape[0]) * flat.element_size()


def _write(plan: _Plan, reduce_max: ReduceMax | None) -> tuple[int, str]:
    """Scatter every staged write; if any rank fails, every rank puts the old values back."""
    done = 0
    status, reason = _OK, ""
    try:
        for write in plan.writes:
            write.target.index_copy_(0, write.where, write.new)
            done += 1
        _synchronize(plan)
    except Exception as exc:  # noqa: BLE001 - any error must reach the vote
        status, reason = _FAILED, f"writing the new values failed: {type(exc).__name__}: {exc}"
    status = _vote(status, reduce_max)
    if status != _OK:
        try:
            for write in reversed(plan.writes[: done + 1]):
                write.target.index_copy_(0, write.where, write.old)
            _synchronize(plan)
        except Exception as exc:  # noqa: BLE001 - the answer must say the weights are mixed
            raise _Mixed(
                f"{reason or _peer_reason(status)}; restoring the old values failed "
                f"too ({type(exc).__name__}: {exc})"
            ) from exc
    return status, reason


def _synchronize(plan: _Plan) -> None:
    import torch

    if plan.writes and plan.writes[0].target.is_cuda:
        torch.cuda.synchronize(plan.writes[0].target.device)


def _vote(status: int, reduce_max: ReduceMax | None) -> int:
    """The worst status of any rank."""
    if reduce_max is None:
        return status
    import torch

    buffer = torch.tensor([status], dtype=torch.int64)
    reduce_max(buffer)
    return int(buffer[0])


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The same memory as a signed integer tensor of the element's width (torch indexes those
    on every device)."""
    import torch

    widths = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if str(tensor.dtype) not in SAFETENSORS_DTYPE_NAMES:
        raise Fallback(f"a parameter of dtype {tensor.dtype} cannot be patched")
    return tensor if not tensor.is_floating_point() else tensor.view(widths[tensor.element_size()])


def _signed(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.dtype(str(dtype).removeprefix("torch.")))


def _say(entry: TensorEntry, exc: Exception) -> str:
    return f"tensor {entry.name}: {type(exc).__name__}: {exc}"


def _peer_reason(status: int) -> str:
    """What a rank that failed nothing itself reports."""
    if status == _FALLBACK:
        return "another rank cannot apply this delta in memory; see its answer"
    return "another rank refused or failed; see its answer"
