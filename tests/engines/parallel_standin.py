"""A Llama-shaped model built the way vLLM (and SGLang, whose layers are ports of vLLM's) builds
and loads one on a tensor- and pipeline-parallel rank, for the engine extension's contract tests.

Each layer keeps the attributes vLLM's layers have and loads like their ``weight_loader``
(``vllm/model_executor/layers/linear.py``, ``vocab_parallel_embedding.py``):

- ``QKVParallelLinear``: ``num_heads = total_heads // tp``; with more ranks than kv heads one kv
  head per rank, shared by ``num_kv_head_replicas = tp // total_kv_heads`` ranks; the q, k, v
  parts at offsets ``0``, ``num_heads * head``, ``(num_heads + num_kv_heads) * head``; loaded
  from ``shard_rank * shard_size`` (``shard_rank = tp_rank // num_kv_head_replicas`` for k, v);
- ``MergedColumnParallelLinear``: part ``i`` at ``sum(output_sizes[:i]) // tp``, loaded from
  ``tp_rank * output_sizes[i] // tp``;
- ``RowParallelLinear``: the weight's columns (``input_dim=1``) from ``tp_rank * shard``; bias
  replicated; ``ColumnParallelLinear``: rows;
- ``VocabParallelEmbedding`` / ``ParallelLMHead``: the vocabulary padded to a multiple of 64,
  rows ``org_vocab_start_index:org_vocab_end_index`` in the first rows, padding zero;
- pipeline parallel: a rank builds only its layers (``make_layers``' ``PPMissingLayer``
  elsewhere, which holds no parameters), the embedding on the first stage, norm and head on the
  last;
- ``load_weights`` maps checkpoint names with ``stacked_params_mapping`` and skips what
  ``is_pp_missing_parameter`` would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from deltaroll.api.weight_change import LiveApplyRequest
from deltaroll.checkpoint import read_delta_manifest


@dataclass(frozen=True)
class Shape:
    vocab: int = 200
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 1
    head: int = 16
    intermediate: int = 96
    layers: int = 2


@dataclass(frozen=True)
class Parallel:
    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1


class QKVParallelLinear(nn.Module):
    def __init__(self, shape: Shape, par: Parallel) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = par.tp_rank, par.tp_size
        self.head_size = shape.head
        self.num_heads = shape.heads // par.tp_size
        if par.tp_size >= shape.kv_heads:
            self.num_kv_heads = 1
            self.num_kv_head_replicas = par.tp_size // shape.kv_heads
        else:
            self.num_kv_heads = shape.kv_heads // par.tp_size
            self.num_kv_head_replicas = 1
        rows = (self.num_heads + 2 * self.num_kv_heads) * self.head_size
        self.weight = nn.Parameter(torch.empty(rows, shape.hidden), requires_grad=False)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str) -> None:
        head = self.head_size
        offset, size = {
            "q": (0, self.num_heads * head),
            "k": (self.num_heads * head, self.num_kv_heads * head),
            "v": ((self.num_heads + self.num_kv_heads) * head, self.num_kv_heads * head),
        }[shard_id]
        shard_rank = self.tp_rank if shard_id == "q" else self.tp_rank // self.num_kv_head_replicas
        param.data.narrow(0, offset, size).copy_(loaded.narrow(0, shard_rank * size, size))


class MergedColumnParallelLinear(nn.Module):
    def __init__(self, hidden: int, output_sizes: list[int], par: Parallel) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = par.tp_rank, par.tp_size
        self.output_sizes = output_sizes
        rows = sum(output_sizes) // par.tp_size
        self.weight = nn.Parameter(torch.empty(rows, hidden), requires_grad=False)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int) -> None:
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        size = self.output_sizes[shard_id] // self.tp_size
        param.data.narrow(0, offset, size).copy_(loaded.narrow(0, self.tp_rank * size, size))


class RowParallelLinear(nn.Module):
    def __init__(self, inputs: int, outputs: int, par: Parallel, bias: bool = False) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = par.tp_rank, par.tp_size
        self.weight = nn.Parameter(torch.empty(outputs, inputs // par.tp_size), False)
        self.weight.input_dim = 1  # type: ignore[attr-defined]
        self.bias = nn.Parameter(torch.empty(outputs), False) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        input_dim = getattr(param, "input_dim", None)
        if input_dim is not None:
            size = param.shape[input_dim]
            loaded = loaded.narrow(input_dim, self.tp_rank * size, size)
        param.data.copy_(loaded)


@dataclass(frozen=True)
class ShardIndices:
    org_vocab_start_index: int
    org_vocab_end_index: int


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab: int, hidden: int, par: Parallel) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = par.tp_rank, par.tp_size
        self.org_vocab_size = vocab
        padded = math.ceil(vocab / 64) * 64
        per_rank = padded // par.tp_size
        start = min(par.tp_rank * per_rank, vocab)
        self.shard_indices = ShardIndices(start, min(start + per_rank, vocab))
        self.weight = nn.Parameter(torch.empty(per_rank, hidden), requires_grad=False)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        assert loaded.shape[0] == self.org_vocab_size
        start = self.shard_indices.org_vocab_start_index
        size = self.shard_indices.org_vocab_end_index - start
        param.data[:size].copy_(loaded.narrow(0, start, size))
        param.data[size:].fill_(0)


class RMSNorm(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden), requires_grad=False)


class Attention(nn.Module):
    def __init__(self, shape: Shape, par: Parallel) -> None:
        super().__init__()
        self.qkv_proj = QKVParallelLinear(shape, par)
        self.o_proj = RowParallelLinear(shape.heads * shape.head, shape.hidden, par)


class MLP(nn.Module):
    def __init__(self, shape: Shape, par: Parallel) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(shape.hidden, [shape.intermediate] * 2, par)
        self.down_proj = RowParallelLinear(shape.intermediate, shape.hidden, par, bias=True)


class DecoderLayer(nn.Module):
    def __init__(self, shape: Shape, par: Parallel) -> None:
        super().__init__()
        self.self_attn = Attention(shape, par)
        self.mlp = MLP(shape, par)
        self.input_layernorm = RMSNorm(shape.hidden)


class PPMissingLayer(nn.Identity):
    """What ``make_layers`` puts where another pipeline stage holds the layer."""


class Decoder(nn.Module):
    def __init__(self, shape: Shape, par: Parallel) -> None:
        super().__init__()
        per_stage = shape.layers // par.pp_size
        mine = range(par.pp_rank * per_stage, (par.pp_rank + 1) * per_stage)
        first, last = par.pp_rank == 0, par.pp_rank == par.pp_size - 1
        self.embed_tokens = (
            VocabParallelEmbedding(shape.vocab, shape.hidden, par) if first else PPMissingLayer()
        )
        self.layers = nn.ModuleList(
            DecoderLayer(shape, par) if i in mine else PPMissingLayer() for i in range(shape.layers)
        )
        self.norm = RMSNorm(shape.hidden) if last else PPMissingLayer()


class LlamaForCausalLM(nn.Module):
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    stacked_params_mapping = [
        (".qkv_proj", ".q_proj", "q"),
        (".qkv_proj", ".k_proj", "k"),
        (".qkv_proj", ".v_proj", "v"),
        (".gate_up_proj", ".gate_proj", 0),
        (".gate_up_proj", ".up_proj", 1),
    ]

    def __init__(self, shape: Shape, par: Parallel, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = Decoder(shape, par)
        last = par.pp_rank == par.pp_size - 1
        self.lm_head = (
            VocabParallelEmbedding(shape.vocab, shape.hidden, par) if last else PPMissingLayer()
        )
        self.to(dtype)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        modules = dict(self.named_modules())
        loaded: set[str] = set()
        for name, tensor in weights:
            for fused, part, shard_id in self.stacked_params_mapping:
                if part not in name:
                    continue
                target = name.replace(part, fused)
                if target not in params:  # is_pp_missing_parameter
                    break
                owner = modules[target.rpartition(".")[0]]
                owner.weight_loader(params[target], tensor, shard_id)
                loaded.add(target)
                break
            else:
                if name not in params:
                    continue
                owner = modules[name.rpartition(".")[0]]
                loader = getattr(owner, "weight_loader", None)
                if loader is None:
                    params[name].data.copy_(tensor)  # default_weight_loader
                else:
                    loader(params[name], tensor)
                loaded.add(name)
        return loaded


def checkpoint_tensors(shape: Shape, seed: int) -> dict[str, torch.Tensor]:
    """A full checkpoint, as Hugging Face names it, in bf16."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*dims: int) -> torch.Tensor:
        return torch.randn(*dims, generator=gen).to(torch.bfloat16)

    h, q, kv = shape.hidden, shape.heads * shape.head, shape.kv_heads * shape.head
    tensors = {"model.embed_tokens.weight": rand(shape.vocab, h), "model.norm.weight": rand(h)}
    tensors["lm_head.weight"] = rand(shape.vocab, h)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": rand(q, h),
            p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h),
            p + "self_attn.o_proj.weight": rand(h, q),
            p + "mlp.gate_proj.weight": rand(shape.intermediate, h),
            p + "mlp.up_proj.weight": rand(shape.intermediate, h),
            p + "mlp.down_proj.weight": rand(h, shape.intermediate),
            p + "mlp.down_proj.bias": rand(h),
            p + "input_layernorm.weight": rand(h),
        }
    return tensors


#: Tensors :func:`fine_tuned` changes everywhere (dense deltas): one every rank holds whole,
#: one split by columns across tensor-parallel ranks, one split by (padded) vocabulary rows.
DENSE = ("model.norm.weight", "model.layers.0.self_attn.o_proj.weight", "model.embed_tokens.weight")


def fine_tuned(
    tensors: dict[str, torch.Tensor], fraction: float, seed: int
) -> dict[str, torch.Tensor]:
    """``tensors`` with about ``fraction`` of every matrix's elements nudged (an optimizer
    step's pattern: scattered, small), and :data:`DENSE` changed everywhere."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in tensors.items():
        changed = tensor.clone()
        if name in DENSE:
            changed += 1
        else:
            mask = torch.rand(tensor.shape, generator=gen) < fraction
            changed[mask] += (0.01 * torch.randn(tensor.shape, generator=gen)).to(tensor.dtype)[
                mask
            ]
        out[name] = changed
    return out


def write_versions(
    root: Path, base: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> Path:
    """``root/base``, ``root/target`` (safetensors checkpoints) and ``root/delta`` between them."""
    from deltaroll.checkpoint import diff_checkpoints

    for side, tensors in (("base", base), ("target", target)):
        (root / side).mkdir()
        save_file(tensors, root / side / "model.safetensors")
    diff_checkpoints(root / "base", root / "target", root / "delta")
    return root


def live_request(delta: Path) -> LiveApplyRequest:
    """The request an agent sends for ``delta``."""
    manifest = read_delta_manifest(delta)
    assert manifest.base_version is not None
    return LiveApplyRequest(
        delta_path=str(delta),
        from_version=manifest.base_version,
        to_version=manifest.target_version,
    )
