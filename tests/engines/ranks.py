"""Ranks of a stand-in engine in processes of their own, joined by a gloo group (NCCL's stand-in
on the CPU), each loading the base checkpoint the way vLLM does and patching it in memory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from deltaroll.api.engine_patch import HeldTensor, RankDigestRequest
from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.engines.extension import ranked_patch
from engines.parallel_standin import LlamaForCausalLM, Parallel, Shape

SHAPE = Shape()


def run_ranks(
    work: Path,
    mode: str,
    scenario: str,
    request: LiveApplyRequest,
    world: int = 2,
    chunk_elements: int = ranked_patch.CHUNK_ELEMENTS,
) -> list[dict]:
    """Start ``world`` ranks (``mode`` "tp" or "pp"), wait, return each rank's report; the
    ranks exchange values ``chunk_elements`` at a time."""
    mp.start_processes(
        _rank_main,
        args=(world, str(work), mode, scenario, request.model_dump_json(), chunk_elements),
        nprocs=world,
        join=True,
        start_method="spawn",
    )
    return [json.loads((work / f"rank{r}.json").read_text()) for r in range(world)]


def parallel(mode: str, rank: int, world: int) -> Parallel:
    if mode == "tp":
        return Parallel(tp_rank=rank, tp_size=world)
    return Parallel(pp_rank=rank, pp_size=world)


def loaded(checkpoint: Path, par: Parallel) -> LlamaForCausalLM:
    model = LlamaForCausalLM(SHAPE, par, torch.bfloat16)
    model.load_weights(load_file(checkpoint / "model.safetensors").items())
    return model


def bits(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().view(torch.int16).clone() for n, p in model.named_parameters()}


def differing(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> list[str]:
    now = bits(model)
    return sorted(n for n in expected if not torch.equal(now[n], expected[n]))


def corrupt_a_changed_q_element(model: LlamaForCausalLM, work: Path, par: Parallel) -> None:
    """Change one served q_proj element that the delta changes and only this rank holds."""
    base = load_file(work / "base" / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    target = load_file(work / "target" / "model.safetensors")[
        "model.layers.0.self_attn.q_proj.weight"
    ]
    qkv = model.model.layers[0].self_attn.qkv_proj
    rows = qkv.num_heads * qkv.head_size
    mine = slice(par.tp_rank * rows, (par.tp_rank + 1) * rows)
    changed = (base[mine].view(torch.int16) != target[mine].view(torch.int16)).nonzero()
    row, col = (int(i) for i in changed[0])
    qkv.weight.data.view(torch.int16)[row, col] += 1


def _digests(model, work: Path, scenario: str, par: Parallel, rank: int, reduce_max) -> dict:
    """Hash every checkpoint tensor as the ranks hold it (twice: the second is rate-limited);
    with "digests-tampered", rank 1's slice of a q_proj element is changed first."""
    from deltaroll.checkpoint import open_checkpoint
    from deltaroll.engines.extension.ranked_digests import digests_on_rank
    from deltaroll.engines.served_duty import DutyLimit

    if scenario == "digests-tampered" and rank == 1:
        corrupt_a_changed_q_element(model, work, par)
    refs = open_checkpoint(work / "base").tensors
    request = RankDigestRequest(
        tensors=[HeldTensor(name=n, dtype=r.dtype, shape=list(r.shape)) for n, r in refs.items()]
    )
    limit = DutyLimit()
    first = digests_on_rank(model, request, rank=rank, reduce_max=reduce_max, limit=limit)
    again = digests_on_rank(model, request, rank=rank, reduce_max=reduce_max, limit=limit)
    return {"first": first.model_dump(), "again": again.model_dump()}


def _rank_main(
    rank: int, world: int, work_text: str, mode: str, scenario: str, request: str, chunk: int
) -> None:
    work = Path(work_text)
    ranked_patch.CHUNK_ELEMENTS = chunk
    dist.init_process_group(
        "gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank, world_size=world
    )
    try:
        par = parallel(mode, rank, world)
        model = loaded(work / "base", par)
        if scenario == "corrupt" and rank == 1:
            corrupt_a_changed_q_element(model, work, par)
        if scenario == "write-fails" and rank == 1:
            write, calls = ranked_patch.ShardedTensor.write_bits, []

            def third_write_fails(self, positions, new_bits):  # the undo's writes go through
                calls.append(self.name)
                if len(calls) == 3:
                    raise RuntimeError("CUDA error: an illegal memory access was encountered")
                write(self, positions, new_bits)

            ranked_patch.ShardedTensor.write_bits = third_write_fails  # type: ignore[method-assign]
        before = bits(model)

        def reduce_max(tensor: torch.Tensor) -> None:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)

        if scenario.startswith("digests"):
            (work / f"rank{rank}.json").write_text(
                json.dumps(_digests(model, work, scenario, par, rank, reduce_max))
            )
            return

        result = ranked_patch.patch_on_rank(
            model, LiveApplyRequest.model_validate_json(request), rank=rank, reduce_max=reduce_max
        )
        fresh_target = bits(loaded(work / "target", par))
        report = {
            "result": result.model_dump(),
            "differs_from_target": differing(model, fresh_target),
            "differs_from_before": differing(model, before),
            "parameters": sorted(before),
        }
        (work / f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()
