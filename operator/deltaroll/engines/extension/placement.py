"""Where the elements of one checkpoint tensor live in one rank's parameters.

vLLM and SGLang do not keep checkpoint tensors: ``q_proj``, ``k_proj`` and ``v_proj`` are rows
of one fused ``qkv_proj`` parameter, ``gate_proj`` and ``up_proj`` of ``gate_up_proj``, and with
tensor parallelism each rank keeps a slice of them (the rows of a column-parallel layer, the
columns of a row-parallel one), as each layer's ``weight_loader`` narrows the loaded tensor. A
:class:`Placement` records that narrowing, so a delta's flat positions in the checkpoint tensor
turn into flat positions in the parameter region that holds them, on this rank or nowhere.
Pure numpy: which rank holds what is decided here, without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Checkpoint tensor ``shape`` narrowed to ``[start, start + length)`` along ``dim`` (no
    narrowing when ``dim`` is None), stored from row ``row_offset`` of parameter ``param``
    (a fused parameter stacks its parts along dimension 0; an expert's is its own sub-tensor)."""

    param: str
    shape: tuple[int, ...]
    dim: int | None = None
    start: int = 0
    length: int = 0
    row_offset: int = 0

    @property
    def local_shape(self) -> tuple[int, ...]:
        if self.dim is None:
            return self.shape
        return tuple(self.length if d == self.dim else n for d, n in enumerate(self.shape))

    def local_positions(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(held, local)``: the mask of ``positions`` (flat, in the checkpoint tensor) this
        placement holds, and their flat positions in its region, ascending like ``positions``."""
        if self.dim is None:
            return np.ones(positions.shape, bool), positions
        inner = math.prod(self.shape[self.dim + 1 :])
        along = (positions // inner) % self.shape[self.dim]
        held = (along >= self.start) & (along < self.start + self.length)
        kept = positions[held]
        outer, rest = np.divmod(kept, inner * self.shape[self.dim])
        local_along = rest // inner - self.start
        local = (outer * self.length + local_along) * inner + rest % inner
        return held, local


def narrowed(
    param: str, shape: tuple[int, ...], local: tuple[int, ...], rank: int, ranks: int
) -> Placement:
    """The placement of a tensor whose rank-local copy has shape ``local``: the whole tensor
    when the shapes agree (replicated), else the ``rank``-th of ``ranks`` equal slices along the
    one dimension that differs (vLLM's ``start_idx = tp_rank * shard_size``, where the layer
    holds ``divide(size, tp_size)``). ValueError for anything else: a checkpoint shape that is
    not exactly ``ranks`` slices would move every position past the first row to another
    element."""
    if tuple(local) == tuple(shape):
        return Placement(param, shape)
    differing = [d for d, (a, b) in enumerate(zip(shape, local, strict=True)) if a != b]
    if len(differing) != 1 or len(shape) != len(local):
        raise ValueError(
            f"{param}: its shape here {list(local)} is not a slice of {list(shape)} along one "
            "dimension"
        )
    dim = differing[0]
    size = local[dim]
    if size * ranks != shape[dim] or not 0 <= rank < ranks:
        raise ValueError(
            f"{param}: {list(shape)} is not {ranks} slices of {list(local)} along dimension "
            f"{dim} (rank {rank}): the checkpoint's shape is not the one the engine loaded"
        )
    return Placement(param, shape, dim, rank * size, size)
