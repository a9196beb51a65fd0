"""Payload blobs packed into few objects: read back exactly, stored once, and a version of many
tensors is a handful of requests, not one per tensor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest
from deltaroll.checkpoint.manifest import PACK_BYTES
from deltaroll.checkpoint.objects import ObjectDir
from deltaroll.checkpoint.packs import PackReader, PackWriter
from fixtures.checkpoints import write_checkpoint


def test_blobs_span_objects_and_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    objects = ObjectDir(tmp_path)
    writer = PackWriter(objects, pack_bytes=100)
    blobs = [
        rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in (1, 99, 250, 7, 100)
    ]
    refs = [writer.add(blob) for blob in blobs]
    again = writer.add(blobs[2])  # identical bytes: stored once
    listed = writer.finish()
    assert again == refs[2]
    assert len(listed) == math.ceil(sum(map(len, blobs)) / 100)
    assert all(ref.size <= 100 for ref in listed)
    reader = PackReader(objects, listed)
    assert [reader.read(ref) for ref in refs] == blobs


def test_a_version_of_many_tensors_is_a_few_objects(tmp_path: Path) -> None:
    """Like an MoE layer: 1,500 expert tensors, each changed a little."""
    torch.manual_seed(0)
    base = {f"experts.{i}.w": torch.randn(64, 32).to(torch.bfloat16) for i in range(1500)}
    target = {}
    for name, tensor in base.items():
        changed = tensor.clone()
        changed.view(-1)[::50] += 0.01
        target[name] = changed
    a = write_checkpoint(tmp_path / "a", base)
    b = write_checkpoint(tmp_path / "b", target)
    diff_checkpoints(a, b, tmp_path / "delta")
    manifest = read_delta_manifest(tmp_path / "delta")
    payload = manifest.delta_bytes()
    assert sum(e.kind == "sparse" for e in manifest.tensors) == 1500
    assert len(manifest.objects) <= math.ceil(payload / PACK_BYTES) + 2
    assert len(list((tmp_path / "delta" / "objects").iterdir())) == len(manifest.objects)
