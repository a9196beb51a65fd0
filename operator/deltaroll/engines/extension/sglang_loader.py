"""SGLang's entry point: a custom weight loader that every scheduler (one per rank) calls.

SGLang (>= 0.4.9, which added ``--custom-weight-loader``) calls
``dynamic_import(load_format)(model, named_tensors)`` from
``ModelRunner.update_weights_from_tensor`` when ``/update_weights_from_tensor`` names a
``load_format`` listed in ``--custom-weight-loader``; the tokenizer manager holds new requests
and waits for running ones first (the writer side of its ``model_update_lock``), as for
``/update_weights_from_disk``. The
route carries tensors, not a request, and answers success whenever the loader returns, so the
request is read from the file :data:`SGLANG_REQUEST_ENV` names on the shared volume and each
rank writes its :class:`PatchResult` beside it (``<request>.rank<N>.json``, written whole, then
renamed). The loader never raises: an exception there would stop SGLang's scheduler.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deltaroll.api.engine_patch import SGLANG_REQUEST_ENV, PatchResult, rank_answer_path
from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.checkpoint.staging import write_file_atomically
from deltaroll.engines.extension.ranked_patch import ReduceMax, patch_on_rank, world_reduction


def patch_in_memory_on(
    model: Any, request_path: Path, *, rank: int, reduce_max: ReduceMax | None
) -> PatchResult:
    """Read the request, patch, write this rank's answer; what the loader does, given a group."""
    try:
        request = LiveApplyRequest.model_validate_json(request_path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - every rank reads the same file, all end here
        result = PatchResult(rank=rank, outcome="failed", reason=f"{request_path}: {exc}")
    else:
        result = patch_on_rank(model, request, rank=rank, reduce_max=reduce_max)
    write_file_atomically(
        rank_answer_path(request_path, rank), result.model_dump_json().encode(), durable=False
    )
    return result


def patch_in_memory(model: Any, named_tensors: list[Any]) -> None:
    """``--custom-weight-loader deltaroll.engines.extension.sglang_loader.patch_in_memory``;
    ``named_tensors`` is empty (the delta is on the shared volume)."""
    from sglang.srt.distributed import get_world_group

    rank, reduce_max = world_reduction(get_world_group())
    configured = os.environ.get(SGLANG_REQUEST_ENV)
    if not configured:
        return  # no answer file: the agent reports that the engine lacks the setting
    patch_in_memory_on(model, Path(configured), rank=rank, reduce_max=reduce_max)
