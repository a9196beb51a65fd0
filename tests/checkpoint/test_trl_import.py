"""Importing TRL sparse patches (both generations) made from two real checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from safetensors.torch import load_file, save_file

from deltaroll.checkpoint import apply_delta, checkpoint_version, import_trl_patch
from deltaroll.checkpoint.errors import TrlPatchError
from fixtures.checkpoints import read_tensors, write_checkpoint
from fixtures.trl_patches import write_trl_patch

from .helpers import tree_digest


@pytest.fixture
def pair(steps: dict[str, list[Path]], tmp_path: Path) -> tuple[Path, Path]:
    """Trained step 1 -> 2, plus a long tensor whose changes are > 65535 elements apart."""
    base_tensors = read_tensors(steps["single"][1])
    target_tensors = read_tensors(steps["single"][2])
    long = torch.zeros(200_000, dtype=torch.bfloat16)
    base_tensors["long.weight"] = long
    changed = long.clone()
    changed[[3, 100_000, 199_999]] = 1.5
    target_tensors["long.weight"] = changed
    base = write_checkpoint(tmp_path / "base", base_tensors)
    target = write_checkpoint(tmp_path / "target", target_tensors)
    return base, target


@pytest.mark.parametrize(
    ("generation", "encoding"), [("blog", "raw"), ("branch", "raw"), ("branch", "gap_delta")]
)
def test_import_reproduces_the_target(
    pair: tuple[Path, Path], tmp_path: Path, generation: Literal["blog", "branch"], encoding: str
) -> None:
    base, target = pair
    patch = write_trl_patch(
        base, target, tmp_path / "patch.safetensors", generation=generation, encoding=encoding
    )
    stored = load_file(str(patch))
    if encoding == "gap_delta":
        assert stored["long.weight.idx"].dtype == torch.uint32  # the fallback is exercised
        assert stored["embed_tokens.weight.idx"].dtype == torch.uint16
    summary = import_trl_patch(base, patch, tmp_path / "delta")
    assert summary.base_version == checkpoint_version(base)
    assert summary.target_version == checkpoint_version(target)
    apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "out")
    assert tree_digest(tmp_path / "out") == tree_digest(target)


def test_trl_anchor_patch_replaces_whole_tensors(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, target = pair
    whole = {"long.weight": read_tensors(target)["long.weight"]}
    patch = tmp_path / "anchor.safetensors"
    save_file(whole, str(patch), metadata={"format": "sparse_weight_patch", "sparse": "False"})
    import_trl_patch(base, patch, tmp_path / "delta")
    apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "out")
    assert torch.equal(read_tensors(tmp_path / "out")["long.weight"], whole["long.weight"])


@pytest.mark.parametrize("encoding", ["nvcomp_cascaded", "zigzag"])
def test_unknown_encoding_is_refused(
    pair: tuple[Path, Path], tmp_path: Path, encoding: str
) -> None:
    base, target = pair
    patch = write_trl_patch(base, target, tmp_path / "p.safetensors", encoding="raw")
    tensors = load_file(str(patch))
    save_file(tensors, str(patch), metadata={"format": "sparse_weight_patch", "encoding": encoding})
    with pytest.raises(TrlPatchError, match=f"index encoding '{encoding}'"):
        import_trl_patch(base, patch, tmp_path / "delta")
    assert not (tmp_path / "delta").exists()


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {
                "missing.idx": torch.tensor([0], dtype=torch.int32),
                "missing.val": torch.ones(1, dtype=torch.bfloat16),
            },
            "does not have",
        ),
        (
            {
                "long.weight.idx": torch.tensor([200_000], dtype=torch.int32),
                "long.weight.val": torch.ones(1, dtype=torch.bfloat16),
            },
            "outside",
        ),
        (
            {
                "long.weight.idx": torch.tensor([1, 1], dtype=torch.int32),
                "long.weight.val": torch.ones(2, dtype=torch.bfloat16),
            },
            "twice",
        ),
        (
            {
                "long.weight.idx": torch.tensor([1], dtype=torch.int32),
                "long.weight.val": torch.ones(1, dtype=torch.float32),
            },
            "same dtype",
        ),
        (
            {
                "long.weight.idx": torch.tensor([1, 2], dtype=torch.int32),
                "long.weight.val": torch.ones(1, dtype=torch.bfloat16),
            },
            "positions but",
        ),
        ({"long.weight.val": torch.ones(1, dtype=torch.bfloat16)}, "without positions"),
        ({"long.weight": torch.ones(1, dtype=torch.bfloat16)}, "neither"),
    ],
)
def test_bad_patches_are_refused(
    pair: tuple[Path, Path], tmp_path: Path, tensors: dict[str, torch.Tensor], message: str
) -> None:
    patch = tmp_path / "bad.safetensors"
    save_file(tensors, str(patch), metadata={"format": "sparse_weight_patch", "encoding": "raw"})
    with pytest.raises(TrlPatchError, match=message):
        import_trl_patch(pair[0], patch, tmp_path / "delta")
    assert not (tmp_path / "delta").exists()
