"""Which region of a live vLLM or SGLang model holds a checkpoint tensor, read off its layers.

Both engines build a model from the same layer classes (SGLang's ``layers/linear.py`` and
``vocab_parallel_embedding.py`` are ports of vLLM's) and load a checkpoint tensor into them the
same way; this module answers from the attributes those weight loaders read, so it follows
the engine's own arithmetic instead of a table per model:

- a fused layer is named in the model's ``packed_modules_mapping`` (``qkv_proj`` holds
  ``q_proj``, ``k_proj``, ``v_proj``; ``gate_up_proj`` holds ``gate_proj``, ``up_proj``; the
  same pairs as ``stacked_params_mapping`` in ``load_weights``); a QKV layer
  (``num_heads``, ``num_kv_heads``, ``head_size``, ``num_kv_head_replicas``) places q, k, v as
  ``QKVParallelLinear.weight_loader`` does, k and v shared by ``num_kv_head_replicas`` ranks
  when there are more ranks than kv heads; a merged layer (``output_sizes``) places part ``i``
  at ``sum(output_sizes[:i]) // tp_size``, as ``MergedColumnParallelLinear.weight_loader``;
- a vocabulary-parallel embedding or LM head keeps rows ``shard_indices.org_vocab_start_index``
  to ``org_vocab_end_index`` in the first rows of its padded parameter;
- any other parameter is replicated when its shape is the checkpoint's, or the rank's equal
  slice along the one dimension that differs (``output_dim`` of a column-parallel layer,
  ``input_dim`` of a row-parallel one), at ``tp_rank * shard_size``;
- a layer another pipeline stage holds is absent here, or a ``PPMissingLayer``.

What the weight loaders transform rather than place (quantized weights, MoE experts loaded
through ``FusedMoE``'s expert map) is refused with the reason, and the agent reloads instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deltaroll.engines.extension.placement import Placement, narrowed
from deltaroll.engines.weights_identity import SAFETENSORS_DTYPE_NAMES

if TYPE_CHECKING:
    import torch

#: The fused layers of the dense decoder models both engines serve, for models that do not say.
DEFAULT_PACKED: dict[str, list[str]] = {
    "qkv_proj": ["q_proj", "k_proj", "v_proj"],
    "gate_up_proj": ["gate_proj", "up_proj"],
}


class NotPlaceable(Exception):
    """The engine holds this tensor in a form a scatter cannot patch; the message says why."""


@dataclass(frozen=True)
class Region:
    """A checkpoint tensor's placement here, with the live parameter that holds it."""

    placement: Placement
    param: torch.Tensor

    def tensor(self) -> torch.Tensor:
        """The flat, contiguous part of the parameter that holds the placement's elements."""
        rows = self.placement.local_shape[0] if self.placement.local_shape else 1
        data = self.param.data
        part = data.narrow(0, self.placement.row_offset, rows) if data.dim() else data
        return part.reshape(-1)


class ModelLayout:
    """Resolves checkpoint tensor names against one rank's live model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._modules = dict(model.named_modules())
        self._params = dict(model.named_parameters())
        packed = getattr(model, "packed_modules_mapping", None) or DEFAULT_PACKED
        self._fused_of = {
            part: (fused, index)
            for fused, parts in dict(packed).items()
            for index, part in enumerate(parts)
        }

    def region(self, name: str, dtype: str, shape: tuple[int, ...]) -> Region | None:
        """Where this rank holds checkpoint tensor ``name`` (``dtype``, ``shape``); None when it
        holds none of it (another pipeline stage, or a tensor the engine does not load).
        Raises :class:`NotPlaceable`."""
        module_path, _, leaf = name.rpartition(".")
        if name in self._params:
            region = self._direct(name, module_path, shape)
        else:
            prefix, _, last = module_path.rpartition(".")
            if last not in self._fused_of:
                self._refuse_experts(name, module_path)
                return None
            fused, index = self._fused_of[last]
            fused_path = f"{prefix}.{fused}" if prefix else fused
            fused_name = f"{fused_path}.{leaf}"
            if fused_name not in self._params:
                self._refuse_experts(name, fused_path)
                return None
            region = self._fused(fused_name, self._modules[fused_path], index, shape)
        _check_plain(name, dtype, region)
        return region

    def _refuse_experts(self, name: str, module_path: str) -> None:
        """Raise NotPlaceable for an MoE expert's tensor, held but fused by an expert map this
        module does not follow (anything else absent here is another stage's)."""
        if ".experts." in f".{name}" or "experts" in module_path.split("."):
            raise NotPlaceable(
                f"{name} is an MoE expert weight, which vLLM and SGLang load through FusedMoE's "
                "expert map (w13/w2, expert parallel); it is not patched in memory yet"
            )

    def _direct(self, name: str, module_path: str, shape: tuple[int, ...]) -> Region:
        param = self._params[name]
        module = self._modules.get(module_path)
        indices = getattr(module, "shard_indices", None)
        if indices is not None:  # VocabParallelEmbedding / ParallelLMHead: padded rows
            start = int(indices.org_vocab_start_index)
            length = int(indices.org_vocab_end_index) - start
            vocab = getattr(module, "org_vocab_size", None)
            if (
                shape[:1] != (vocab,)
                or shape[1:] != tuple(param.shape[1:])
                or not 0 <= start <= start + length <= shape[0]
                or length > param.shape[0]
            ):  # the weight loader asserts shape[0] == org_vocab_size before it narrows
                raise NotPlaceable(
                    f"{name}: {list(param.shape)} (vocabulary {vocab}) does not hold {list(shape)}"
                )
            return Region(Placement(name, shape, 0, start, length), param)
        rank = int(getattr(module, "tp_rank", 0) or 0)
        ranks = int(getattr(module, "tp_size", 1) or 1)
        try:
            return Region(narrowed(name, shape, tuple(param.shape), rank, ranks), param)
        except ValueError as exc:
            raise NotPlaceable(str(exc)) from exc

    def _fused(self, fused_name: str, module: Any, index: int, shape: tuple[int, ...]) -> Region:
        param = self._params[fused_name]
        tp_rank = int(getattr(module, "tp_rank", 0) or 0)
        tp_size = int(getattr(module, "tp_size", 1) or 1)
        if all(hasattr(module, a) for a in ("num_heads", "num_kv_heads", "head_size")):
            head = int(module.head_size)
            v_head = int(getattr(module, "v_head_size", head) or head)
            sizes = [
                int(module.num_heads) * head,
                int(module.num_kv_heads) * head,
                int(module.num_kv_heads) * v_head,
            ]
            replicas = int(getattr(module, "num_kv_head_replicas", 1) or 1)
            shard_rank = tp_rank if index == 0 else tp_rank // replicas
            shards = tp_size if index == 0 else tp_size // replicas
        elif hasattr(module, "output_sizes"):
            sizes = [int(size) // tp_size for size in module.output_sizes]
            shard_rank, shards = tp_rank, tp_size
        else:
            raise NotPlaceable(f"{fused_name}: a fused layer of unknown kind {type(module)}")
        if index >= len(sizes):
            raise NotPlaceable(f"{fused_name} has {len(sizes)} parts, not a part {index}")
        size, offset = sizes[index], sum(sizes[:index])
        if shards * size != shape[0] or shard_rank >= shards or offset + size > param.shape[0]:
            raise NotPlaceable(
                f"{fused_name}: part {index} is {shards} slices of {size} rows, not "
                f"{list(shape)}: the checkpoint's shape is not the one the engine loaded"
            )
        if tuple(param.shape[1:]) != shape[1:]:
            raise NotPlaceable(f"{fused_name} is {list(param.shape)}, its part is {list(shape)}")
        placement = Placement(fused_name, shape, 0, shard_rank * size, size, offset)
        return Region(placement, param)


def _check_plain(name: str, dtype: str, region: Region) -> None:
    """Refuse a parameter that does not hold the checkpoint's elements as they are: another
    dtype (FP8 or INT4 serving of a bf16 checkpoint), a repacked or non-contiguous layout."""
    param = region.param
    served = SAFETENSORS_DTYPE_NAMES.get(str(param.dtype))
    if served != dtype:
        raise NotPlaceable(
            f"{name} is served as {param.dtype} from a {dtype} checkpoint (quantized serving): "
            "its served values are not the checkpoint's, so a delta of those cannot be scattered"
        )
    if not param.data.is_contiguous():
        raise NotPlaceable(f"{region.placement.param} is not contiguous in memory")
    needed = region.placement.row_offset * math.prod(param.shape[1:]) + math.prod(
        region.placement.local_shape
    )
    if needed > param.numel():
        raise NotPlaceable(f"{name} does not fit in {region.placement.param}")
