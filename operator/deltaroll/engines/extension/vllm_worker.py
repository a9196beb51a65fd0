"""vLLM's entry point: a worker extension whose method every worker runs on ``/collective_rpc``.

vLLM (>= 0.8.3 for ``--worker-extension-cls`` on the V1 engine; the ``/collective_rpc`` dev route
with ``VLLM_SERVER_DEV_MODE=1``, which passes only strings as ``kwargs``) mixes the class into
every ``Worker``; ``self.model_runner.get_model()`` is the rank's model (unwrapped from a CUDA
graph wrapper, where there is one) and ``get_world_group()``
spans every tensor- and pipeline-parallel rank, whose ``cpu_group`` (gloo) carries the
exchange of changed values. Each worker returns its :class:`PatchResult` (or, asked for the
digests of what it serves, its :class:`RankDigests`) as a dict, which the route puts in
``{"results": [...]}``.
"""

from __future__ import annotations

from typing import Any

from deltaroll.api.engine_patch import PROTOCOL, RankDigestRequest
from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.engines.extension.ranked_digests import digests_on_rank
from deltaroll.engines.extension.ranked_patch import ReduceMax, patch_on_rank, world_reduction
from deltaroll.engines.served_duty import DutyLimit


class DeltarollWorkerExtension:
    """Mixed into every vLLM worker by ``--worker-extension-cls
    deltaroll.engines.extension.vllm_worker.DeltarollWorkerExtension``."""

    model_runner: Any  # set by vLLM's Worker, which this class is mixed into

    def deltaroll_patch_protocol(self) -> int:
        """The contract this extension speaks (the agent asks before it pauses vLLM)."""
        return PROTOCOL

    def deltaroll_patch_in_memory(self, request: str) -> dict[str, Any]:
        """Apply the delta ``request`` (a :class:`LiveApplyRequest` as JSON) on this rank."""
        parsed = LiveApplyRequest.model_validate_json(request)
        rank, reduce_max = _world()
        return patch_on_rank(self._model(), parsed, rank=rank, reduce_max=reduce_max).model_dump()

    def deltaroll_served_digests(self, request: str) -> dict[str, Any]:
        """Digests of the checkpoint tensors ``request`` (a :class:`RankDigestRequest` as JSON)
        names, gathered from every rank's slice; rate-limited (see :mod:`.ranked_digests`)."""
        parsed = RankDigestRequest.model_validate_json(request)
        limit = getattr(self, "_deltaroll_digest_limit", None)
        if limit is None:
            limit = self._deltaroll_digest_limit = DutyLimit()
        rank, reduce_max = _world()
        answer = digests_on_rank(
            self._model(), parsed, rank=rank, reduce_max=reduce_max, limit=limit
        )
        return answer.model_dump()

    def _model(self) -> Any:
        runner = self.model_runner
        return runner.get_model() if hasattr(runner, "get_model") else runner.model


def _world() -> tuple[int, ReduceMax | None]:
    """This worker's rank in vLLM's world group, and a MAX reduction over the group."""
    from vllm.distributed import get_world_group

    return world_reduction(get_world_group())
