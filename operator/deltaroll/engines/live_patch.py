"""Patching an engine's live weights in memory with a delta the agent already verified.

After the agent has patched the weights on disk, an engine need not reload the whole model: it
scatters the changed elements into its own tensors. This module is the engine-agnostic part,
shared by the reference engine and the vLLM / SGLang extensions; it runs in the engine's process
and uses the engine's torch (``deltaroll[engine-extension]`` adds no torch of its own), numpy
and the codec to decode the delta. Two steps, so the pause holds only the writes::

    patch = prepare_patch(delta_dir, resolve)   # reads and checks; requests still served
    with requests_held():                       # the engine's own hold and drain
        patch.commit()                          # scatters; undoes itself if anything fails

:func:`prepare_patch` reads the delta's manifest and objects (checked again: nothing is trusted
for being on the volume), asks ``resolve`` for the live tensor of every changed checkpoint name,
reads the live values at the changed positions only, computes the new values and refuses unless
positions, old and new values hash to the tensor's ``changes_digest`` (a dense tensor: unless
the whole tensor matches both sides' digests). :meth:`LivePatch.commit` writes the new values;
if a write fails midway it restores the saved old values at the positions written so far (what
it saved are the changed values, never a second copy of the weights).

A delta that changes what the engine holds beyond values (a tensor added, removed, or changing
dtype or shape, an auxiliary file such as the config changing, a tensor the engine does not hold
in the checkpoint's dtype and shape) raises :class:`~deltaroll.engines.errors.LayoutChangeError`:
the caller falls back to a full reload from disk.

``resolve`` maps a checkpoint tensor name to what the engine holds: a contiguous
``torch.Tensor`` with the checkpoint's dtype and shape (a parameter, or a view of a fused one),
or any :class:`LiveTensor` (an engine with sharded or transformed parameters implements its own
gather and scatter of flat checkpoint positions), or None when it holds no such tensor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from deltaroll.checkpoint.apply import verify_objects
from deltaroll.checkpoint.bounds import check_claims
from deltaroll.checkpoint.changeset import sparse_changes
from deltaroll.checkpoint.digests import check_version_ids, tensor_digest
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import CheckpointError
from deltaroll.checkpoint.manifest import DeltaManifest, read_delta_manifest
from deltaroll.checkpoint.manifest_tensors import TensorEntry, TensorSide
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.packs import PackReader
from deltaroll.checkpoint.transform import Side, encoded_tensor, other
from deltaroll.codec import CodecError, changes_digest, decode_dense
from deltaroll.codec.gaps import gaps_to_positions
from deltaroll.engines.errors import LayoutChangeError, LivePatchError, LiveWeightsMismatchError
from deltaroll.engines.weights_identity import SAFETENSORS_DTYPE_NAMES

if TYPE_CHECKING:
    import torch


@runtime_checkable
class LiveTensor(Protocol):
    """What an engine holds for one checkpoint tensor, addressed by the checkpoint's flat
    element positions, its elements as raw bits (numpy unsigned integers of the dtype's width).

    ``positions`` None means every element, in order (a dense change)."""

    def read_bits(self, positions: np.ndarray | None) -> np.ndarray:
        """The current bits at ``positions`` (a copy)."""
        ...

    def write_bits(self, positions: np.ndarray | None, bits: np.ndarray) -> None:
        """Write ``bits`` at ``positions``; may be called again with the old bits to undo."""
        ...


#: Checkpoint tensor name -> what the engine holds for it (None: nothing).
Resolver = Callable[[str], "torch.Tensor | LiveTensor | None"]

#: The signed torch dtype of each element width (every indexing op exists for them).
SIGNED_OF_WIDTH = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


class FlatTensor:
    """A whole contiguous torch tensor as a :class:`LiveTensor`, on whatever device it is.

    Elements are viewed as signed integers of their width (every indexing op exists for them on
    every device) and moved as numpy's unsigned bits; positions and values are put on the
    tensor's device in :meth:`stage`, before the pause, so a write is one ``index_put_``. On the
    CPU the write is numpy's assignment into the same memory instead: a sparse write into a model
    larger than the caches misses once per element, and numpy's loop misses faster (1.7x on
    34M elements with 1 % changed, one thread)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        import torch

        if not tensor.is_contiguous():
            raise LayoutChangeError(
                "a live tensor is not contiguous, so checkpoint positions do not address it; "
                "the engine must reload"
            )
        width = tensor.element_size()
        self._bits = tensor.detach().view(-1).view(getattr(torch, SIGNED_OF_WIDTH[width]))
        self._unsigned = np.dtype(f"<u{width}")
        self._array = (
            self._bits.numpy().view(self._unsigned) if self._bits.device.type == "cpu" else None
        )
        self._staged: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}

    def _positions(self, positions: np.ndarray | None) -> torch.Tensor | None:
        import torch

        if positions is None:
            return None
        return torch.from_numpy(positions).to(self._bits.device)

    def read_bits(self, positions: np.ndarray | None) -> np.ndarray:
        index = self._positions(positions)
        if index is not None:
            values = self._bits[index]
        else:  # .cpu() of a device tensor is a copy already; a CPU tensor needs one (undo)
            values = self._bits.clone() if self._bits.device.type == "cpu" else self._bits
        return values.cpu().numpy().view(self._unsigned)

    def stage(self, positions: np.ndarray | None, bits: np.ndarray) -> None:
        """Put ``positions`` and ``bits`` on the device now, for the write of the same bits."""
        import torch

        if self._array is not None:
            return  # the CPU writes from the numpy arrays themselves

        values = torch.from_numpy(np.ascontiguousarray(bits).view(f"<i{bits.itemsize}"))
        self._staged[id(bits)] = (self._positions(positions), values.to(self._bits.device))

    def write_bits(self, positions: np.ndarray | None, bits: np.ndarray) -> None:
        import torch

        if self._array is not None:
            self._array[slice(None) if positions is None else positions] = bits
            return
        staged = self._staged.get(id(bits))
        if staged is None:
            self.stage(positions, bits)
            staged = self._staged[id(bits)]
        index, values = staged
        if index is None:
            self._bits.copy_(values)
        else:
            self._bits.index_put_((index,), values)
        if self._bits.device.type != "cpu":
            torch.cuda.synchronize(self._bits.device)  # written before requests run again


@dataclass
class TensorPatch:
    """One changed tensor: where (None: everywhere), its old and new bits there."""

    name: str
    live: LiveTensor
    positions: np.ndarray | None
    old_bits: np.ndarray
    new_bits: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes this patch writes into the engine's memory."""
        return int(self.new_bits.nbytes)


@dataclass
class LivePatch:
    """A checked patch, ready to be written into the live tensors (see :meth:`commit`)."""

    from_version: str
    to_version: str
    tensors: list[TensorPatch] = field(default_factory=list)
    #: Each changed tensor's digest on the to-side (what the engine holds once committed).
    to_digests: dict[str, str] = field(default_factory=dict)
    prepare_seconds: float = 0.0

    @property
    def bytes_applied(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def changed_elements(self) -> int:
        return sum(int(t.new_bits.shape[0]) for t in self.tensors)

    def commit(self) -> None:
        """Write every new value; on any failure, restore the old values of every tensor
        written or partly written so far, and raise :class:`LivePatchError`."""
        done: list[TensorPatch] = []
        try:
            for patch in self.tensors:
                done.append(patch)
                patch.live.write_bits(patch.positions, patch.new_bits)
        except Exception as exc:
            undo_failed = _undo(done)
            raise LivePatchError(
                f"writing tensor {done[-1].name!r} into the engine's memory failed ({exc}); "
                + (
                    f"the old values were restored, the engine still serves {self.from_version}"
                    if not undo_failed
                    else f"restoring the old values of {undo_failed} failed too: the engine's "
                    "weights are mixed, reload them from disk"
                ),
                old_weights_kept=not undo_failed,
            ) from exc

    def undo(self) -> None:
        """Restore the old values of every tensor (after a commit the caller regrets)."""
        failed = _undo(list(self.tensors))
        if failed:
            raise LivePatchError(
                f"restoring the old values of {failed} failed: reload the weights from disk",
                old_weights_kept=False,
            )


def _undo(written: list[TensorPatch]) -> list[str]:
    """Write the old bits back, last written first; the names whose restore failed."""
    failed = []
    for patch in reversed(written):
        try:
            patch.live.write_bits(patch.positions, patch.old_bits)
        except Exception:
            failed.append(patch.name)
    return failed


def warm_live_patch() -> None:
    """Load what :func:`prepare_patch` needs beyond the engine itself (the codec's compiled
    kernels: ~0.5 s of CPU, seconds with a cold cache), for an engine to call at start rather than
    pay inside its first change, beside the requests it serves."""
    from deltaroll.codec import kernels  # noqa: F401


def prepare_patch(
    delta_dir: Path,
    resolve: Resolver,
    *,
    reverse: bool = False,
    manifest: DeltaManifest | None = None,
) -> LivePatch:
    """Read the delta in ``delta_dir``, check it against the live tensors, and return the
    patch that turns them from its base (its target, with ``reverse``) into the other side.
    ``manifest`` is the delta's manifest where the caller has parsed it already (it is checked
    here all the same).

    Writes nothing. Raises :class:`LayoutChangeError` when the delta cannot be applied in
    memory (reload instead), :class:`LiveWeightsMismatchError` when the live values are not the
    delta's from-side, and :class:`LivePatchError` for a delta that does not check out."""
    started = time.perf_counter()
    from_side: Side = "target" if reverse else "base"
    to_side = other(from_side)
    try:
        if manifest is None:
            manifest = read_delta_manifest(Path(delta_dir))
        check_claims(manifest, to_side)
        check_version_ids(manifest)
        objects = ObjectDir(Path(delta_dir))
        verify_objects(manifest, objects)
    except CheckpointError as exc:
        raise LivePatchError(f"the delta in {delta_dir} does not check out: {exc}") from exc
    from_version, to_version = manifest.version(from_side), manifest.version(to_side)
    if from_version is None or to_version is None:
        raise LayoutChangeError("the delta is an anchor (from nothing): the engine must reload")
    _refuse_layout_change(manifest, from_side)
    payload = PackReader(objects, manifest.objects)
    patch = LivePatch(from_version, to_version)
    for entry in manifest.tensors:
        if entry.payload is None:
            continue  # unchanged (carried tensors were refused above)
        live = _resolved(entry, resolve, from_side)
        try:
            patch.tensors.append(_checked(entry, live, payload, from_side))
            patch.to_digests[entry.name] = _side(entry, to_side).digest
        except (CodecError, CheckpointError) as exc:
            raise LivePatchError(
                f"the payload of tensor {entry.name!r} does not apply: {exc}; fetch or recompute "
                "the delta"
            ) from exc
    for tensor in patch.tensors:
        stage = getattr(tensor.live, "stage", None)
        if stage is not None:
            stage(tensor.positions, tensor.new_bits)
    patch.prepare_seconds = time.perf_counter() - started
    return patch


def _side(entry: TensorEntry, side: Side) -> TensorSide:
    found = entry.side(side)
    assert found is not None  # a sparse or dense entry has both sides
    return found


def _refuse_layout_change(manifest: DeltaManifest, from_side: Side) -> None:
    carried = [e.name for e in manifest.tensors if e.kind == "carried"]
    if carried:
        raise LayoutChangeError(
            f"the delta adds, removes or reshapes tensors ({', '.join(carried[:3])}"
            f"{', ...' if len(carried) > 3 else ''}): the engine must reload"
        )
    layouts = manifest.layout(from_side), manifest.layout(other(from_side))
    files = [{a.name: a.digest for a in layout.aux_files} if layout else {} for layout in layouts]
    changed = sorted(
        n for n in files[0].keys() | files[1].keys() if files[0].get(n) != files[1].get(n)
    )
    if changed:
        raise LayoutChangeError(
            f"the delta changes {', '.join(changed[:3])}, which the engine read at load time: "
            "the engine must reload"
        )


def _resolved(entry: TensorEntry, resolve: Resolver, from_side: Side) -> LiveTensor:
    import torch

    side = entry.side(from_side)
    assert side is not None  # a sparse or dense entry has both sides
    held = resolve(entry.name)
    if held is None:
        raise LayoutChangeError(
            f"the engine holds no tensor {entry.name!r} as the checkpoint names it: it must reload"
        )
    if isinstance(held, torch.Tensor):
        _check_same_type(entry.name, side, held)
        return FlatTensor(held)
    return held


def _check_same_type(name: str, side: TensorSide, tensor: torch.Tensor) -> None:
    dtype = SAFETENSORS_DTYPE_NAMES.get(str(tensor.dtype))
    if (dtype, tuple(tensor.shape)) != (side.dtype, tuple(side.shape)):
        raise LayoutChangeError(
            f"the engine holds {name!r} as {tensor.dtype}{list(tensor.shape)}, the checkpoint as "
            f"{side.dtype}{list(side.shape)} (a quantized or reshaped copy): it must reload"
        )


def _checked(
    entry: TensorEntry, live: LiveTensor, payload: PackReader, from_side: Side
) -> TensorPatch:
    side = entry.side(from_side)
    assert side is not None
    dtype = np.dtype(bits_view(side.dtype))
    if entry.kind == "dense":
        return _checked_dense(entry, live, payload, from_side, dtype)
    changes = sparse_changes(entry, dtype, payload)
    if changes.count != entry.changed_elements or changes.total != entry.total_elements:
        raise CodecError("the payload's counts differ from the manifest's")
    positions = gaps_to_positions(changes.gaps, changes.total)
    old = np.ascontiguousarray(live.read_bits(positions), dtype)
    new = old.copy()
    changes.resolve(new, forward=from_side == "base")
    base, target = (old, new) if from_side == "base" else (new, old)
    if changes_digest(positions, base, target) != entry.changes_digest:
        raise LiveWeightsMismatchError(
            f"tensor {entry.name!r}: the engine's values at its {changes.count} changed positions "
            f"are not the ones the delta was made from; the engine does not serve the delta's "
            f"{from_side}: reload it from disk"
        )
    return TensorPatch(entry.name, live, positions, old, new)


def _checked_dense(
    entry: TensorEntry, live: LiveTensor, payload: PackReader, from_side: Side, dtype: np.dtype
) -> TensorPatch:
    """Almost every element changes: the whole tensor's old bits and new ones, each checked
    against its side's digest (costs the tensor, as a dense change does anyway)."""
    old = np.ascontiguousarray(live.read_bits(None), dtype)
    expected_from, expected_to = entry.side(from_side), entry.side(other(from_side))
    assert expected_from is not None and expected_to is not None
    if old.shape[0] != entry.total_elements or tensor_digest(old) != expected_from.digest:
        raise LiveWeightsMismatchError(
            f"tensor {entry.name!r}: the engine's values are not the delta's {from_side}: reload "
            "it from disk"
        )
    new = old.copy()
    for start, xor in decode_dense(encoded_tensor(entry, payload), dtype):
        new[start : start + xor.shape[0]] ^= xor
    if tensor_digest(new) != expected_to.digest:
        raise LivePatchError(
            f"tensor {entry.name!r} does not match its {other(from_side)} digest after applying "
            "its payload: the delta is corrupt; fetch or recompute it"
        )
    return TensorPatch(entry.name, live, None, old, new)
