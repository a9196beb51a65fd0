"""Digests of the checkpoint's tensors as an engine's ranks hold them now, for the agent's check
of what is served.

Once a patch lives in the engine's memory, the disk scrub no longer proves what is served. A
rank holds a slice of a fused or sharded tensor (or none of it), so each whole checkpoint tensor
is gathered the way the patch reads its changed values (:meth:`ShardedTensor.chunks`: one
``all_reduce(MAX)`` per chunk, which also proves that replicas agree) and hashed as the
checkpoint's BLAKE3 is, chunk by chunk; every rank ends with the same digests. Memory grows with
the chunk, not the tensor. Hashing stops the engine's steps (vLLM runs a ``collective_rpc``
between two of them), so the ranks keep to :mod:`deltaroll.engines.served_duty`'s limit: all
refuse together (one vote) until the last call's cost has been paid back.
"""

from __future__ import annotations

import math
import time

import blake3

from deltaroll.api.engine_patch import HeldTensor, RankDigestRequest, RankDigests
from deltaroll.checkpoint.dtypes import byte_view
from deltaroll.checkpoint.manifest_tensors import TensorSide
from deltaroll.engines.errors import LayoutChangeError, LivePatchError
from deltaroll.engines.extension.layout import ModelLayout, NotPlaceable
from deltaroll.engines.extension.ranked_patch import (
    FALLBACK,
    ReduceMax,
    ReplicasDifferError,
    ShardedTensor,
    vote,
)
from deltaroll.engines.served_duty import DutyLimit


def digests_on_rank(
    model: object,
    request: RankDigestRequest,
    *,
    rank: int,
    reduce_max: ReduceMax | None,
    limit: DutyLimit,
) -> RankDigests:
    """Hash ``request``'s tensors in step with every other rank (each calls this with the same
    request). Refused on every rank if any rank's :class:`DutyLimit` says wait."""
    wait_ms = vote(math.ceil(limit.wait_s() * 1000), reduce_max)
    if wait_ms > 0:
        return RankDigests(rank=rank, retry_after_s=wait_ms / 1000)
    started = time.monotonic()
    layout = ModelLayout(model)  # type: ignore[arg-type]
    digests, unhashable, differ = {}, {}, []
    for held in request.tensors:
        try:  # every rank sees the same gathered values, so each raises alike
            digests[held.name] = _digest(_sharded(layout, held, reduce_max))
        except ReplicasDifferError:
            differ.append(held.name)
        except (LayoutChangeError, LivePatchError) as exc:
            unhashable[held.name] = str(exc)
    limit.spent(time.monotonic() - started)
    return RankDigests(rank=rank, digests=digests, unhashable=unhashable, replicas_differ=differ)


def _sharded(layout: ModelLayout, held: HeldTensor, reduce_max: ReduceMax | None) -> ShardedTensor:
    side = TensorSide(held.dtype, tuple(held.shape), "")
    region, problem = None, None
    try:
        region = layout.region(held.name, held.dtype, tuple(held.shape))
    except (NotPlaceable, KeyError, ValueError) as exc:
        problem = (FALLBACK, f"{held.name} cannot be hashed where the engine holds it: {exc}")
    return ShardedTensor(held.name, side, region, problem, reduce_max)


def _digest(tensor: ShardedTensor) -> str:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    for _, bits in tensor.chunks(None):
        hasher.update(byte_view(bits))
    return hasher.hexdigest()
