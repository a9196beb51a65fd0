"""Diff and apply between real trained checkpoints: byte-exact in every layout, both directions."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from deltaroll.checkpoint import (
    apply_delta,
    checkpoint_version,
    describe_delta,
    diff_checkpoints,
    digests,
    read_delta_manifest,
    scatter,
    verify_checkpoint,
)
from fixtures.checkpoints import Layout, read_tensors, write_checkpoint

from .helpers import tree_digest


@pytest.mark.parametrize("layout", ["single", "sharded", "file"])
def test_apply_out_reproduces_target_and_reverse_reproduces_base(
    steps: dict[str, list[Path]], tmp_path: Path, layout: str
) -> None:
    base, target = steps[layout][0], steps[layout][1]
    summary = diff_checkpoints(base, target, tmp_path / "delta")
    assert summary.base_version == checkpoint_version(base)
    assert summary.target_version == checkpoint_version(target)
    assert 0 < summary.changed_elements < summary.total_elements
    assert summary.delta_bytes < summary.target_bytes

    apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "forward")
    apply_delta(target, tmp_path / "delta", out_dir=tmp_path / "back", reverse=True)
    # A single-file layout is written as that one file inside the output directory.
    forward = tmp_path / "forward" / target.name if target.is_file() else tmp_path / "forward"
    back = tmp_path / "back" / base.name if base.is_file() else tmp_path / "back"
    assert tree_digest(forward) == tree_digest(target)
    assert tree_digest(back) == tree_digest(base)
    assert verify_checkpoint(tmp_path / "forward", tmp_path / "delta").matches
    assert verify_checkpoint(tmp_path / "back", tmp_path / "delta", side="base").matches
    assert not verify_checkpoint(tmp_path / "back", tmp_path / "delta").matches


@pytest.mark.parametrize("layout", ["single", "sharded", "file"])
def test_in_place_forward_then_reverse_is_byte_identical(
    steps: dict[str, list[Path]], tmp_path: Path, layout: str
) -> None:
    base, target = steps[layout][0], steps[layout][1]
    diff_checkpoints(base, target, tmp_path / "delta")
    before = tree_digest(base)
    assert apply_delta(base, tmp_path / "delta", in_place=True).changed
    assert tree_digest(base) == tree_digest(target)
    again = apply_delta(base, tmp_path / "delta", in_place=True)
    assert not again.changed
    assert tree_digest(base) == tree_digest(target)
    apply_delta(base, tmp_path / "delta", in_place=True, reverse=True)
    assert tree_digest(base) == before


def test_layout_change_sharded_to_single_and_back_in_place(
    steps: dict[str, list[Path]], tmp_path: Path
) -> None:
    base, target = steps["sharded"][0], steps["single"][1]
    diff_checkpoints(base, target, tmp_path / "delta")
    apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "out")
    assert tree_digest(tmp_path / "out") == tree_digest(target)
    original = tree_digest(base)
    apply_delta(base, tmp_path / "delta", in_place=True)
    assert tree_digest(base) == tree_digest(target)
    apply_delta(base, tmp_path / "delta", in_place=True, reverse=True)
    assert tree_digest(base) == original


def _resized(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vocabulary resize, a new head, a removed buffer and a dtype change."""
    changed = dict(tensors)
    embed = changed["embed_tokens.weight"]
    changed["embed_tokens.weight"] = torch.cat(
        [embed, torch.randn(8, embed.shape[1]).to(embed.dtype)]
    )
    changed["value_head.weight"] = torch.randn(1, embed.shape[1], dtype=torch.bfloat16)
    del changed["position_ids"]
    changed["norm.weight"] = changed["norm.weight"].to(torch.bfloat16)
    return changed


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_added_removed_resized_and_retyped_tensors_are_carried_reversibly(
    steps: dict[str, list[Path]], tmp_path: Path, layout: Layout
) -> None:
    base = steps[layout][1]
    target = write_checkpoint(
        tmp_path / "target",
        _resized(read_tensors(steps[layout][2])),
        layout=layout,
        config={"model_type": "tinylm", "vocab_size": 264},
    )
    diff_checkpoints(base, target, tmp_path / "delta")
    summary = describe_delta(tmp_path / "delta")
    assert summary["added"] == ["value_head.weight"]
    assert summary["removed"] == ["position_ids"]
    manifest = read_delta_manifest(tmp_path / "delta")
    kinds = {e.name: e.kind for e in manifest.tensors}
    assert kinds["embed_tokens.weight"] == kinds["norm.weight"] == "carried"

    apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "forward")
    assert tree_digest(tmp_path / "forward") == tree_digest(target)
    apply_delta(target, tmp_path / "delta", out_dir=tmp_path / "back", reverse=True)
    assert tree_digest(tmp_path / "back") == tree_digest(base)

    original = tree_digest(base)
    apply_delta(base, tmp_path / "delta", in_place=True)
    assert tree_digest(base) == tree_digest(target)
    apply_delta(base, tmp_path / "delta", in_place=True, reverse=True)
    assert tree_digest(base) == original


def test_anchor_is_a_delta_from_nothing(steps: dict[str, list[Path]], tmp_path: Path) -> None:
    target = steps["sharded"][2]
    summary = diff_checkpoints(None, target, tmp_path / "anchor")
    assert summary.base_version is None
    assert summary.changed_elements == summary.total_elements
    apply_delta(None, tmp_path / "anchor", out_dir=tmp_path / "out")
    assert tree_digest(tmp_path / "out") == tree_digest(target)


def test_identical_checkpoints_give_an_all_unchanged_delta(
    steps: dict[str, list[Path]], tmp_path: Path
) -> None:
    summary = diff_checkpoints(steps["single"][1], steps["single"][1], tmp_path / "delta")
    assert summary.changed_elements == 0
    assert summary.base_version == summary.target_version
    assert {e.kind for e in read_delta_manifest(tmp_path / "delta").tensors} == {"unchanged"}


def _traced_peak(run: Callable[[], object]) -> int:
    """The most Python and numpy memory allocated at once while ``run`` runs."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_diff_and_apply_stream_one_tensor_at_a_time(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"layer.{i}.weight": torch.randn(512, 1024, generator=generator).to(torch.bfloat16)
        for i in range(16)
    }
    base = write_checkpoint(tmp_path / "base", tensors)
    for tensor in tensors.values():
        tensor.view(-1)[::50] += 1.0
    target = write_checkpoint(tmp_path / "target", tensors)
    largest = 512 * 1024 * 2
    model_bytes = largest * len(tensors)
    peak = _traced_peak(lambda: diff_checkpoints(base, target, tmp_path / "delta"))
    assert peak < model_bytes / 2, (peak, model_bytes)
    assert peak < 6 * largest, (peak, largest)
    for label, apply in (
        ("out", lambda: apply_delta(base, tmp_path / "delta", out_dir=tmp_path / "out")),
        ("in-place", lambda: apply_delta(base, tmp_path / "delta", in_place=True)),
    ):
        peak = _traced_peak(apply)
        assert peak < 6 * largest, (label, peak, largest)
    assert tree_digest(base) == tree_digest(target) == tree_digest(tmp_path / "out")


def test_a_dense_change_is_applied_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor that changes everywhere (a dense delta) is read, checked, logged and written
    in windows, in place (from a trusted state) and with -o: never held whole."""
    numel = 1 << 24  # 32 MiB of bf16
    weights = torch.randn(numel, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    base = write_checkpoint(tmp_path / "base", {"w": weights, "bias": torch.zeros(8)})
    moved = (weights.view(torch.int16) ^ 1).view(torch.bfloat16)  # every element: one ULP
    target = write_checkpoint(tmp_path / "target", {"w": moved, "bias": torch.ones(8)})
    delta = tmp_path / "delta"
    diff_checkpoints(base, target, delta)
    assert {e.name: e.kind for e in read_delta_manifest(delta).tensors}["w"] == "dense"
    original = tree_digest(base)
    apply_delta(base, delta, in_place=True)  # a full hash earns the trusted state
    apply_delta(base, delta, in_place=True, reverse=True)
    # The tensor spans several windows of the patching and of -o's full hash of its source.
    monkeypatch.setattr(scatter, "WINDOW_BYTES", 4 << 20)
    monkeypatch.setattr(digests, "READ_WINDOW_BYTES", 4 << 20)
    tensor_bytes = 2 * numel
    for label, apply in (
        ("in-place", lambda: apply_delta(base, delta, in_place=True)),
        ("out", lambda: apply_delta(base, delta, out_dir=tmp_path / "out", reverse=True)),
    ):
        peak = _traced_peak(apply)
        assert peak < tensor_bytes / 3, (label, peak, tensor_bytes)
    assert tree_digest(base) == tree_digest(target)
    assert tree_digest(tmp_path / "out") == original


def test_every_dtype_empty_and_scalar_tensors_round_trip(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(7)
    floats = torch.randn(33, 17, generator=generator)
    base = {
        "bool": floats > 0,
        "u8": (floats * 50).to(torch.uint8),
        "i8": (floats * 50).to(torch.int8),
        "i16": (floats * 1000).to(torch.int16),
        "i32": (floats * 1e6).to(torch.int32),
        "i64": (floats * 1e9).to(torch.int64),
        "f16": floats.to(torch.float16),
        "bf16": floats.to(torch.bfloat16),
        "f32": floats.clone(),
        "f64": floats.to(torch.float64),
        "f8_e4m3": floats.to(torch.float8_e4m3fn),
        "f8_e5m2": floats.to(torch.float8_e5m2),
        "nan_and_zeros": torch.tensor([float("nan"), 0.0, -0.0, float("inf")]),
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(1.5),
    }
    target = {name: tensor.clone() for name, tensor in base.items()}
    for tensor in target.values():
        flat = tensor.view(-1)
        flat[::7] = flat.roll(1)[::7]
    target["scalar"] = torch.tensor(2.5)
    target["nan_and_zeros"] = torch.tensor([float("nan"), -0.0, 0.0, float("inf")])
    base_path = write_checkpoint(tmp_path / "base", base)
    target_path = write_checkpoint(tmp_path / "target", target)
    diff_checkpoints(base_path, target_path, tmp_path / "delta")
    kinds = {e.name: e.kind for e in read_delta_manifest(tmp_path / "delta").tensors}
    assert kinds["nan_and_zeros"] != "unchanged"  # -0.0 and 0.0 differ bit for bit
    apply_delta(base_path, tmp_path / "delta", out_dir=tmp_path / "out")
    assert tree_digest(tmp_path / "out") == tree_digest(target_path)
    apply_delta(target_path, tmp_path / "delta", in_place=True, reverse=True)
    assert tree_digest(target_path) == tree_digest(base_path)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ),
    ],
)
def test_diff_on_a_torch_device_writes_the_same_delta(
    steps: dict[str, list[Path]], tmp_path: Path, device: str
) -> None:
    base, target = steps["sharded"][0], steps["sharded"][2]
    diff_checkpoints(base, target, tmp_path / "numpy")
    diff_checkpoints(base, target, tmp_path / "torch", device=device)
    assert tree_digest(tmp_path / "torch") == tree_digest(tmp_path / "numpy")
