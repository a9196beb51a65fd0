"""Importing a TRL sparse safetensors patch, given its base checkpoint, as a Deltaroll delta.

Two generations of TRL's format exist; both are read:

- **Blog format** ("delta weight sync" post): ``<param>.indices`` holds int32 positions into the
  flattened tensor, ``<param>.values`` the new elements (the parameter's dtype).
- **Delta-weight-sync branch format** (``trl/experimental/async_grpo``: ``delta_engine.py``
  ``encode_patch``, ``delta_codec.py``, ``weight_diff.py`` ``PatchMetadata``):
  ``<param>.idx`` / ``<param>.val``, with the file's safetensors metadata written from
  ``PatchMetadata``: ``format="sparse_weight_patch"``, ``version="1"``, ``sparse="True"`` (or
  ``"False"`` for an anchor holding whole tensors under their own names), and ``encoding``:

  - ``raw``: int32 absolute flat positions;
  - ``gap_delta``: ``gap[k] = idx[k] - idx[k-1] - 1`` with ``idx[-1] = -1``, stored as uint16, or
    uint32 for a parameter whose largest gap does not fit (the index dtype *is* the width);
    positions are ``cumsum(gap + 1) - 1``. A missing ``encoding`` means ``gap_delta``, TRL's
    default.

  ``nvcomp_cascaded`` needs nvCOMP on a GPU and is refused, like any other unknown encoding.

Values are taken as the new bit patterns (never converted), so their dtype must be the base
parameter's dtype. The patched target keeps the base's layout and auxiliary files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltaroll.checkpoint.diff import DeltaSummary, write_delta
from deltaroll.checkpoint.errors import InvalidCheckpointError, TrlPatchError
from deltaroll.checkpoint.reader import Checkpoint, TensorRef, open_checkpoint, read_tensor_bits
from deltaroll.checkpoint.staging import check_output_free
from deltaroll.checkpoint.transform import OnBytes

KNOWN_ENCODINGS = ("raw", "gap_delta")
_SUFFIXES = {".idx": ".val", ".indices": ".values"}


@dataclass(frozen=True)
class _SparseUpdate:
    positions: TensorRef
    values: TensorRef
    encoding: str  # "raw" (absolute positions) or "gap_delta"


@dataclass(frozen=True)
class _WholeUpdate:
    tensor: TensorRef


def import_trl_patch(
    base: Path, patch: Path, out_dir: Path, *, level: int = 3, on_bytes: OnBytes | None = None
) -> DeltaSummary:
    """Write the delta from ``base`` to ``base`` patched by the TRL file ``patch``."""
    check_output_free(Path(out_dir))
    checkpoint = open_checkpoint(Path(base))
    updates = _read_updates(Path(patch), checkpoint)

    def patched(name: str, bits: np.ndarray) -> np.ndarray:
        update = updates.get(name)
        if update is None:
            return bits
        if isinstance(update, _WholeUpdate):
            return read_tensor_bits(update.tensor)
        positions = _positions(update, bits.size)
        values = read_tensor_bits(update.values)
        if values.size != positions.size:
            raise TrlPatchError(
                f"{name}: {positions.size} positions but {values.size} values in {patch}"
            )
        bits[positions] = values
        return bits

    return write_delta(
        checkpoint,
        checkpoint,
        Path(out_dir),
        level=level,
        on_bytes=on_bytes,
        target_override=patched,
    )


def _read_updates(patch: Path, base: Checkpoint) -> dict[str, _SparseUpdate | _WholeUpdate]:
    try:
        opened = open_checkpoint(patch)
    except InvalidCheckpointError as exc:
        raise TrlPatchError(f"{patch} is not a TRL patch: {exc}") from exc
    if opened.kind != "file":
        raise TrlPatchError(f"{patch} is a directory; pass the patch's .safetensors file")
    metadata = opened.weight_files[0].header.metadata or {}
    tensors = opened.tensors
    if metadata.get("sparse") == "False":
        updates: dict[str, _SparseUpdate | _WholeUpdate] = {
            name: _WholeUpdate(ref) for name, ref in tensors.items()
        }
    else:
        updates = dict(_sparse_updates(patch, tensors, metadata))
    for name, update in updates.items():
        _check_against_base(patch, name, update, base)
    return updates


def _sparse_updates(
    patch: Path, tensors: dict[str, TensorRef], metadata: dict[str, str]
) -> dict[str, _SparseUpdate]:
    updates = {}
    for key, ref in tensors.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            if not any(key.endswith(v) for v in _SUFFIXES.values()):
                raise TrlPatchError(
                    f"{patch}: tensor {key!r} is neither <param>.idx/.val nor "
                    "<param>.indices/.values; is this a TRL sparse patch?"
                )
            continue
        name = key[: -len(suffix)]
        values = tensors.get(name + _SUFFIXES[suffix])
        if values is None:
            raise TrlPatchError(f"{patch}: {key!r} has no matching {name + _SUFFIXES[suffix]!r}")
        encoding = metadata.get("encoding", "gap_delta") if suffix == ".idx" else "raw"
        if encoding not in KNOWN_ENCODINGS:
            raise TrlPatchError(
                f"{patch} uses index encoding {encoding!r}; Deltaroll can import "
                f"{' and '.join(KNOWN_ENCODINGS)}: re-export the patch with one of them"
            )
        updates[name] = _SparseUpdate(ref, values, encoding)
    orphans = [k for k in tensors if k.endswith((".val", ".values"))]
    paired = {u.values.name for u in updates.values()}
    if unpaired := [k for k in orphans if k not in paired]:
        raise TrlPatchError(f"{patch}: values without positions: {unpaired[:3]}")
    return updates


def _check_against_base(
    patch: Path, name: str, update: _SparseUpdate | _WholeUpdate, base: Checkpoint
) -> None:
    target = base.tensors.get(name)
    if target is None:
        raise TrlPatchError(f"{patch} patches {name!r}, which the base checkpoint does not have")
    if isinstance(update, _WholeUpdate):
        if (update.tensor.dtype, update.tensor.shape) != (target.dtype, target.shape):
            raise TrlPatchError(f"{patch}: {name!r} does not match the base's dtype and shape")
        return
    if update.values.dtype != target.dtype:
        raise TrlPatchError(
            f"{patch}: values of {name!r} are {update.values.dtype} but the base tensor is "
            f"{target.dtype}; a lossless import needs the same dtype"
        )
    allowed = {"raw": ("I32", "I64"), "gap_delta": ("U16", "U32")}[update.encoding]
    if update.positions.dtype not in allowed or len(update.positions.shape) != 1:
        raise TrlPatchError(
            f"{patch}: positions of {name!r} are {update.positions.dtype}"
            f"{list(update.positions.shape)}; {update.encoding} needs a 1-D {' or '.join(allowed)}"
        )


def _positions(update: _SparseUpdate, numel: int) -> np.ndarray:
    """Absolute flat positions as int64, checked to be unique and inside the tensor."""
    stored = read_tensor_bits(update.positions)
    if update.encoding == "gap_delta":
        positions = np.cumsum(stored.astype(np.int64) + 1) - 1
    else:
        signed = stored.view(np.dtype(f"<i{stored.dtype.itemsize}"))
        positions = signed.astype(np.int64)
    name = update.positions.name
    if positions.size and (positions.min() < 0 or positions.max() >= numel):
        raise TrlPatchError(f"{name}: positions fall outside the tensor's {numel} elements")
    if np.unique(positions).size != positions.size:
        raise TrlPatchError(f"{name}: a position appears twice")
    return positions
