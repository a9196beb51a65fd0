"""The in-memory patch on every rank of one engine, all ranks in step, all or nothing.

:mod:`deltaroll.engines.live_patch` checks and scatters a delta through a resolver of live
tensors. On a tensor- or pipeline-parallel engine each rank holds a slice of some tensors and
none of others, while a change set is checked (and a sparse payload resolved) against the base
values at *all* its positions. So the resolver here hands the core a :class:`ShardedTensor` for
every changed tensor, on every rank: its ``read_bits`` gathers the values this rank holds and an
``all_reduce(MAX)`` over the world group gives every rank every value (a holder contributes it,
the others a sentinel; the minimum, reduced in the same call, proves that replicas agree), one
per :data:`CHUNK_ELEMENTS` positions, so the exchange's buffers stay bounded even for a dense
change of a large embedding; its ``write_bits`` writes this rank's slice only. Every rank then
runs the same checks on the same values, so all accept or refuse the same tensor. Collectives
and memory grow with the changed elements, never with the model.

A rank-local problem (a parameter that cannot be placed, a failed device copy) travels in the
same reduction, so every rank stops at the same tensor instead of leaving the others waiting
(the core's own steps read the same files on every rank and decide alike). Three votes bracket
the core: after reading the manifest, after preparing, after writing; a rank that fails to write
undoes itself, and every other rank then undoes its writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deltaroll.api.engine_patch import PatchResult
from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.manifest import DeltaManifest, read_delta_manifest
from deltaroll.checkpoint.manifest_tensors import TensorSide
from deltaroll.checkpoint.transform import Side
from deltaroll.engines.errors import LayoutChangeError, LivePatchError
from deltaroll.engines.extension.layout import ModelLayout, NotPlaceable, Region
from deltaroll.engines.live_patch import SIGNED_OF_WIDTH, LivePatch, prepare_patch

if TYPE_CHECKING:
    import torch

#: ``all_reduce(MAX)`` of an int64 tensor over every rank, in place; None in a single process.
ReduceMax = Callable[["torch.Tensor"], None]

_OK, FALLBACK, _FAILED = 0, 1, 2
_NOT_HELD = -1  # bits are unsigned and at most 32 bits wide here, so -1 is never a value
_NONE_HELD = -(2**62)
#: Elements exchanged per collective (their buffer: 16 MiB of int64 pairs).
CHUNK_ELEMENTS = 1 << 20


class ReplicasDifferError(LivePatchError):
    """Ranks that should hold the same copy of some elements hold different values."""


class ShardedTensor:
    """One checkpoint tensor as the core sees it, whichever rank holds which of its elements."""

    def __init__(
        self,
        name: str,
        side: TensorSide,
        region: Region | None,
        problem: tuple[int, str] | None,
        reduce_max: ReduceMax | None,
    ) -> None:
        self.name = name
        self._total = math.prod(side.shape)
        self._unsigned = np.dtype(bits_view(side.dtype))
        self._region = region
        self._problem = problem
        self._reduce_max = reduce_max
        self._staged: dict[int, tuple[Any, Any]] = {}

    def read_bits(self, positions: np.ndarray | None) -> np.ndarray:
        count = self._total if positions is None else positions.shape[0]
        out = np.empty(count, self._unsigned)
        for start, bits in self.chunks(positions):
            out[start : start + bits.shape[0]] = bits
        return out

    def chunks(self, positions: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, bits)``: the values at ``positions`` (None: every element), gathered
        from every rank :data:`CHUNK_ELEMENTS` at a time, so the exchange's buffers (16 bytes
        an element) never grow with the tensor; ``start`` indexes ``positions``."""
        count = self._total if positions is None else positions.shape[0]
        for start in range(0, max(count, 1), CHUNK_ELEMENTS):
            end = min(count, start + CHUNK_ELEMENTS)
            if positions is None:
                chunk = np.arange(start, end, dtype=np.int64)
            else:
                chunk = positions[start:end]
            yield start, self._exchanged(chunk)

    def _exchanged(self, positions: np.ndarray) -> np.ndarray:
        """One ``all_reduce(MAX)``: every rank's values at ``positions``, replicas checked."""
        import torch

        count = positions.shape[0]
        buffer = torch.full((1 + 2 * count,), _NOT_HELD, dtype=torch.int64)
        buffer[1 + count :] = _NONE_HELD
        status, reason = self._problem or (_OK, "")
        if status == _OK and self._region is not None:
            try:
                mask, values = self._gather(positions)
                buffer[1 : 1 + count][mask] = values
                buffer[1 + count :][mask] = -values
            except Exception as exc:  # noqa: BLE001 - it must reach the other ranks
                status, reason = _FAILED, f"reading {self.name} failed: {exc}"
        buffer[0] = status
        if self._reduce_max is not None:
            self._reduce_max(buffer)
        high, low = buffer[1 : 1 + count].numpy(), -buffer[1 + count :].numpy()
        _raise_for(int(buffer[0]), reason)
        if count and (high == _NOT_HELD).all():
            raise LayoutChangeError(f"no rank of the engine holds tensor {self.name}")
        if (high == _NOT_HELD).any():
            raise LivePatchError(f"the ranks of the engine hold only part of tensor {self.name}")
        if (high != low).any():
            raise ReplicasDifferError(f"the ranks' copies of tensor {self.name} differ: reload")
        return high.astype(self._unsigned)

    def stage(self, positions: np.ndarray | None, bits: np.ndarray) -> None:
        """Put this rank's positions and new values on the device before the pause (a dense
        change: its slice's values alone, in the slice's order, written whole)."""
        import torch

        if self._region is None:
            self._staged[id(bits)] = (None, None)
            return
        flat = self._flat()
        if positions is None:  # a replicated tensor is written from ``bits`` themselves
            replicated = self._region.placement.dim is None
            where, values = None, bits if replicated else self._local_slice(bits)
        else:
            mask, local = self._region.placement.local_positions(positions)
            where, values = torch.from_numpy(local).to(flat.device), bits[mask]
        signed = np.ascontiguousarray(values).view(SIGNED_OF_WIDTH[bits.itemsize])
        self._staged[id(bits)] = (where, torch.from_numpy(signed).to(flat.device))

    def _local_slice(self, bits: np.ndarray) -> np.ndarray:
        """This rank's elements of the whole tensor ``bits``, in its slice's order (positions
        mapped a chunk at a time: a position array of the whole tensor is 8 bytes an
        element)."""
        assert self._region is not None
        local = np.empty(math.prod(self._region.placement.local_shape), bits.dtype)
        filled = 0
        for start in range(0, self._total, CHUNK_ELEMENTS):
            end = min(self._total, start + CHUNK_ELEMENTS)
            held, _ = self._region.placement.local_positions(np.arange(start, end, dtype=np.int64))
            mine = bits[start:end][held]
            local[filled : filled + mine.shape[0]] = mine
            filled += mine.shape[0]
        if filled != local.shape[0]:
            raise LivePatchError(f"{self.name}: this rank's slice does not cover its parameter")
        return local

    def write_bits(self, positions: np.ndarray | None, bits: np.ndarray) -> None:
        import torch

        if id(bits) not in self._staged:
            self.stage(positions, bits)
        where, values = self._staged[id(bits)]
        if values is None:
            return  # another rank holds it
        flat = self._flat()
        if where is None:
            flat.copy_(values)
        else:
            flat.index_put_((where,), values)
        if flat.device.type != "cpu":
            torch.cuda.synchronize(flat.device)

    def written_bytes(self, bits: np.ndarray) -> int:
        """Bytes this rank writes (or wrote) of the new ``bits``: its own slice's."""
        _, values = self._staged.get(id(bits), (None, None))
        return 0 if values is None else int(values.shape[0]) * bits.itemsize

    def _flat(self) -> torch.Tensor:
        import torch

        assert self._region is not None
        flat = self._region.tensor()
        return flat.view(getattr(torch, SIGNED_OF_WIDTH[flat.element_size()]))

    def _gather(self, positions: np.ndarray) -> tuple[Any, Any]:
        import torch

        assert self._region is not None
        mask, local = self._region.placement.local_positions(positions)
        flat = self._flat()
        values = flat.index_select(0, torch.from_numpy(local).to(flat.device)).cpu().numpy()
        unsigned = values.view(f"u{values.dtype.itemsize}").astype(np.int64)
        return torch.from_numpy(mask), torch.from_numpy(unsigned)


def _raise_for(status: int, reason: str) -> None:
    if status == FALLBACK:
        raise LayoutChangeError(reason or "another rank cannot patch this delta in memory")
    if status == _FAILED:
        raise LivePatchError(reason or "another rank failed to read its weights")


def patch_on_rank(
    model: torch.nn.Module,
    request: LiveApplyRequest,
    *,
    rank: int,
    reduce_max: ReduceMax | None,
) -> PatchResult:
    """Apply ``request`` to ``model`` on this rank, in step with every other rank (each calls
    this with the same request; ``reduce_max`` reduces over all of them). Never raises: the
    answer says what happened, and a rank that raised would leave the others waiting."""
    started = time.perf_counter()
    status, reason = _OK, ""
    manifest: DeltaManifest | None = None
    sides: dict[str, TensorSide] = {}
    try:
        manifest, sides = _sides(request)
    except LayoutChangeError as exc:
        status, reason = FALLBACK, str(exc)
    except Exception as exc:  # noqa: BLE001 - it must reach the vote
        status, reason = _FAILED, f"{type(exc).__name__}: {exc}"
    status = vote(status, reduce_max)
    patch: LivePatch | None = None
    if status == _OK:
        layout = ModelLayout(model)

        def resolve(name: str) -> ShardedTensor:
            side, region, problem = sides[name], None, None
            try:
                if np.dtype(bits_view(side.dtype)).itemsize > 4:
                    raise NotPlaceable(f"{name} has 64-bit elements, which are not exchanged")
                region = layout.region(name, side.dtype, tuple(side.shape))
            except NotPlaceable as exc:
                problem = (FALLBACK, str(exc))
            return ShardedTensor(name, side, region, problem, reduce_max)

        try:
            patch = prepare_patch(
                Path(request.delta_path), resolve, reverse=request.reverse, manifest=manifest
            )
        except LayoutChangeError as exc:
            status, reason = FALLBACK, str(exc)
        except Exception as exc:  # noqa: BLE001 - it must reach the vote
            status, reason = _FAILED, str(exc)
        status = vote(status, reduce_max)
    kept, write_s = True, 0.0
    if status == _OK and patch is not None:
        status, reason, kept, write_s = _commit(patch, reduce_max)
    if status != _OK and not reason:
        reason = "another rank could not patch its weights; see its answer"
    applied = status == _OK and patch is not None
    return PatchResult(
        rank=rank,
        outcome="applied" if applied else ("fallback" if status == FALLBACK else "failed"),
        reason=reason,
        bytes_applied=_bytes_written(patch) if applied else 0,
        changed_elements=patch.changed_elements if applied and patch else 0,
        prepare_s=patch.prepare_seconds if patch else 0.0,
        write_s=write_s,
        seconds=time.perf_counter() - started,
        old_weights_kept=kept,
    )


def _sides(request: LiveApplyRequest) -> tuple[DeltaManifest, dict[str, TensorSide]]:
    """The request's manifest (parsed once: the core checks it) and the from-side of every
    tensor in it (a placement needs the checkpoint's shape), once the manifest is the one the
    request names."""
    manifest = read_delta_manifest(Path(request.delta_path))
    ends = (request.to_version, request.from_version) if request.reverse else None
    wanted = ends or (request.from_version, request.to_version)
    if (manifest.base_version, manifest.target_version) != wanted:
        raise LivePatchError(
            f"the delta in {request.delta_path} leads from {manifest.base_version} to "
            f"{manifest.target_version}, not from {request.from_version} to "
            f"{request.to_version}; nothing was changed"
        )
    from_side: Side = "target" if request.reverse else "base"
    sides = {e.name: side for e in manifest.tensors if (side := e.side(from_side)) is not None}
    return manifest, sides


def _commit(patch: LivePatch, reduce_max: ReduceMax | None) -> tuple[int, str, bool, float]:
    """Write on every rank; if any rank failed, every rank undoes (a rank whose own write
    failed has undone itself)."""
    started = time.perf_counter()
    status, reason, kept, written = _OK, "", True, False
    try:
        patch.commit()
        written = True
    except LivePatchError as exc:
        status, reason, kept = _FAILED, str(exc), exc.old_weights_kept
    write_s = time.perf_counter() - started
    status = vote(status, reduce_max)
    if status != _OK and written:
        try:
            patch.undo()
        except LivePatchError as exc:
            reason, kept = str(exc), False
    return status, reason, kept, write_s


def _bytes_written(patch: LivePatch | None) -> int:
    """Bytes this rank wrote: the elements of its own slices."""
    if patch is None:
        return 0
    return sum(
        t.live.written_bytes(t.new_bits) for t in patch.tensors if isinstance(t.live, ShardedTensor)
    )


def world_reduction(group: Any) -> tuple[int, ReduceMax | None]:
    """This rank of ``group`` (the world's ``GroupCoordinator``, vLLM's or SGLang's: both have
    ``rank``, ``world_size`` and a gloo ``cpu_group``) and a MAX reduction over its CPU side,
    which carries the exchange of changed values (None alone)."""
    import torch.distributed as dist

    def reduce_max(tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group.cpu_group)

    return int(group.rank), reduce_max if group.world_size > 1 else None


def vote(status: int, reduce_max: ReduceMax | None) -> int:
    """The worst status of any rank."""
    if reduce_max is None:
        return status
    import torch

    buffer = torch.tensor([status], dtype=torch.int64)
    reduce_max(buffer)
    return int(buffer[0])
