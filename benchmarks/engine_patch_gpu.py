"""GPU check: the engine extension's in-memory patch on CUDA tensors of a >= 1B-parameter model.

One command, a few minutes on one GPU (not part of the tests)::

    python benchmarks/engine_patch_gpu.py [--parameters 1.1e9] [--fraction 0.01] [--workdir DIR]

Builds a synthetic Llama-shaped bf16 checkpoint (TinyLlama's shapes, scaled to --parameters),
a target with --fraction of every matrix's elements moved by one AdamW-sized step, and the
Deltaroll delta between them (diffed on the GPU). Loads the base into CUDA parameters, then in
the same run:

- the extension's patch (``patch_on_rank``: read and check the delta, exchange nothing on one
  rank, scatter): ``prepare_s`` (requests could still be served), ``write_s`` (the pause);
- a full reload for comparison: every tensor of the target read from disk and copied into the
  parameters (what ``reload_weights`` does);
- bit-exactness: every parameter against the target checkpoint.

Prints a table on stderr and one JSON object as the last line of stdout, with the scatter time
per 1 % of changed elements (``write_ms_per_1pct``). Runs on the CPU with ``--device cpu`` (for a
smoke run with a small --parameters); the numbers that matter are CUDA's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest
from deltaroll.engines.extension.ranked_patch import patch_on_rank

#: TinyLlama-1.1B's proportions: hidden, intermediate, kv heads' width, vocabulary, layers.
HIDDEN, INTERMEDIATE, KV, VOCAB, LAYERS = 2048, 5632, 256, 32000, 22


def shapes(parameters: float) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor shapes with about ``parameters`` elements (layers scaled to fit)."""
    layer = {
        "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
        "self_attn.k_proj.weight": (KV, HIDDEN),
        "self_attn.v_proj.weight": (KV, HIDDEN),
        "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
        "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
        "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
        "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        "input_layernorm.weight": (HIDDEN,),
    }
    per_layer = sum(math.prod(s) for s in layer.values())
    embed = VOCAB * HIDDEN
    layers = max(1, round((parameters - 2 * embed) / per_layer))
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        out |= {f"model.layers.{i}.{name}": shape for name, shape in layer.items()}
    return out | {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}


def write_checkpoints(
    root: Path, tensor_shapes: dict[str, tuple[int, ...]], fraction: float, device: str
) -> None:
    """``root/base`` and ``root/target`` (one file each), made on ``device``."""
    gen = torch.Generator(device=device).manual_seed(0)
    base, target = {}, {}
    for name, shape in tensor_shapes.items():
        tensor = (0.02 * torch.randn(shape, generator=gen, device=device)).to(torch.bfloat16)
        changed = tensor.clone()
        if len(shape) == 2:
            mask = torch.rand(shape, generator=gen, device=device) < fraction
            step = (1e-3 * torch.randn(shape, generator=gen, device=device)).to(torch.bfloat16)
            changed[mask] += step[mask].sign() * tensor[mask].abs().clamp(min=1e-3) * 0.05
        base[name], target[name] = tensor.cpu(), changed.cpu()
    for side, tensors in (("base", base), ("target", target)):
        (root / side).mkdir()
        save_file(tensors, root / side / "model.safetensors")


class Model(nn.Module):
    """Parameters under the checkpoint's names, as an engine without fused layers holds them."""

    def __init__(self, tensors: dict[str, torch.Tensor], device: str) -> None:
        super().__init__()
        for name, tensor in tensors.items():
            path, _, leaf = name.rpartition(".")
            module: nn.Module = self
            for part in path.split("."):
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, nn.Parameter(tensor.to(device), requires_grad=False))


def reload_seconds(model: Model, checkpoint: Path, device: str) -> float:
    """A full reload: read every tensor from disk and copy it into the parameters."""
    synchronize(device)
    started = time.perf_counter()
    params = dict(model.named_parameters())
    for name, tensor in load_file(checkpoint / "model.safetensors").items():
        params[name].data.copy_(tensor.to(device, non_blocking=True))
    synchronize(device)
    return time.perf_counter() - started


def bit_exact(model: Model, checkpoint: Path, device: str) -> bool:
    params = dict(model.named_parameters())
    return all(
        torch.equal(params[name].view(torch.int16), tensor.to(device).view(torch.int16))
        for name, tensor in load_file(checkpoint / "model.safetensors").items()
    )


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(workdir: Path, parameters: float, fraction: float, device: str) -> dict[str, Any]:
    tensor_shapes = shapes(parameters)
    started = time.perf_counter()
    write_checkpoints(workdir, tensor_shapes, fraction, device)
    diff_checkpoints(
        workdir / "base", workdir / "target", workdir / "delta",
        device=device if device.startswith("cuda") else None,
    )  # fmt: skip
    setup_s = time.perf_counter() - started
    manifest = read_delta_manifest(workdir / "delta")
    assert manifest.base_version is not None
    request = LiveApplyRequest(
        delta_path=str(workdir / "delta"),
        from_version=manifest.base_version,
        to_version=manifest.target_version,
    )
    model = Model(load_file(workdir / "base" / "model.safetensors"), device)
    total = sum(p.numel() for p in model.parameters())
    synchronize(device)
    result = patch_on_rank(model, request, rank=0, reduce_max=None)
    if result.outcome != "applied":
        raise SystemExit(f"the patch was not applied: {result.reason}")
    exact = bit_exact(model, workdir / "target", device)
    reload_s = reload_seconds(model, workdir / "target", device)
    percent = 100.0 * result.changed_elements / total
    return {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "parameters": total,
        "changed_elements": result.changed_elements,
        "changed_fraction": result.changed_elements / total,
        "bytes_applied": result.bytes_applied,
        "prepare_s": result.prepare_s,
        "write_s": result.write_s,
        "write_ms_per_1pct": 1000.0 * result.write_s / percent,
        "prepare_s_per_1pct": result.prepare_s / percent,
        "reload_s": reload_s,
        "reload_vs_write": reload_s / result.write_s if result.write_s else None,
        "bit_exact": exact,
        "setup_s": setup_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=float, default=1.1e9)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        row = measure(Path(work), args.parameters, args.fraction, args.device)
    for key, value in row.items():
        print(f"{key:>20}  {value}", file=sys.stderr)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
