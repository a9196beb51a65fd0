"""vLLM's entry point: a worker extension whose method every worker runs on ``/collective_rpc``.

vLLM (>= 0.8.3 for ``--worker-extension-cls`` on the V1 engine; the ``/collective_rpc`` dev route
with ``VLLM_SERVER_DEV_MODE=1``, which passes only strings as ``kwargs``) mixes the class into
every ``Worker``; ``self.model_runner.get_model()`` is the rank's model (unwrapped from a CUDA
graph wrapper, where there is one) and ``get_world_group()``
spans every tensor- and pipeline-parallel rank, whose ``cpu_group`` (gloo) carries the
exchange of changed values. Each worker returns its :class:`PatchResult` as a dict, which the
route puts in ``{"results": [...]}``.
"""

from __future__ import annotations

from typing import Any

from deltaroll.api.engine_patch import PROTOCOL
from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.engines.extension.ranked_patch import patch_on_rank


class DeltarollWorkerExtension:
    """Mixed into every vLLM worker by ``--worker-extension-cls
    deltaroll.engines.extension.vllm_worker.DeltarollWorkerExtension``."""

    model_runner: Any  # set by vLLM's Worker, which this class is mixed into

    def deltaroll_patch_protocol(self) -> int:
        """The contract this extension speaks (the agent asks before it pauses vLLM)."""
        return PROTOCOL

    def deltaroll_patch_in_memory(self, request: str) -> dict[str, Any]:
        """Apply the delta ``request`` (a :class:`LiveApplyRequest` as JSON) on this rank."""
        import torch.distributed as dist
        from vllm.distributed import get_world_group

        group = get_world_group()

        def reduce_max(tensor: Any) -> None:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group.cpu_group)

        parsed = LiveApplyRequest.model_validate_json(request)
        runner = self.model_runner
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        world = reduce_max if group.world_size > 1 else None
        return patch_on_rank(model, parsed, rank=group.rank, reduce_max=world).model_dump()
