"""Reading checkpoints: layouts, exact tensor bits, version ids, and refusing malformed files."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from deltaroll.checkpoint import checkpoint_version, open_checkpoint, tensor_digest
from deltaroll.checkpoint.errors import InvalidCheckpointError, UnsupportedDtypeError
from deltaroll.checkpoint.reader import TensorFile
from fixtures.checkpoints import read_tensors, write_checkpoint


@pytest.mark.parametrize("layout", ["single", "sharded", "file"])
def test_reads_every_tensor_bit_exactly(steps: dict[str, list[Path]], layout: str) -> None:
    path = steps[layout][1]
    checkpoint = open_checkpoint(path)
    expected = read_tensors(path)
    assert set(checkpoint.tensors) == set(expected)
    dtypes = {ref.dtype for ref in checkpoint.tensors.values()}
    assert {"BF16", "F32", "F16", "I64", "I32"} <= dtypes
    for name, tensor in expected.items():
        raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        assert checkpoint.read_bits(name).tobytes() == raw, name
        assert checkpoint.tensors[name].shape == tuple(tensor.shape)
    if layout == "sharded":
        assert len(checkpoint.weight_files) == 2
        assert "model.safetensors.index.json" in checkpoint.aux_files
    if layout != "file":
        assert {"config.json", "tokenizer.json"} <= set(checkpoint.aux_files)


def test_version_depends_on_tensors_and_files_not_on_sharding(
    steps: dict[str, list[Path]],
) -> None:
    versions = {layout: checkpoint_version(paths[1]) for layout, paths in steps.items()}
    # The shard index is layout: one file or shards, the same tensors and files, the same id.
    assert versions["single"] == versions["sharded"]
    # A bare .safetensors file carries no config or tokenizer: another version.
    assert versions["file"] != versions["single"]
    assert checkpoint_version(steps["single"][0]) != versions["single"]
    config = steps["single"][1] / "config.json"
    config.write_text(config.read_text() + " ")
    assert checkpoint_version(steps["single"][1]) != versions["single"]


def test_digest_is_blake3_of_raw_bytes() -> None:
    import blake3

    bits = np.arange(10, dtype="<u2")
    assert tensor_digest(bits) == blake3.blake3(bits.tobytes()).hexdigest()
    assert tensor_digest(bits.tobytes()) == tensor_digest(bits)


def _header_file(path: Path, header: dict[str, object], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "truncated"),
        ("not_safetensors", "header length"),
        ("offsets_past_end", "truncated"),
        ("gap", "expected"),
        ("size_mismatch", "needs"),
        ("not_json", "not JSON"),
    ],
)
def test_refuses_malformed_files(tmp_path: Path, case: str, message: str) -> None:
    good = write_checkpoint(
        tmp_path / "good.safetensors", {"w": torch.ones(4, 4, dtype=torch.bfloat16)}, layout="file"
    )
    path = tmp_path / f"{case}.safetensors"
    if case == "truncated":
        path.write_bytes(good.read_bytes()[:-3])
    elif case == "not_safetensors":
        path.write_text("this is a config file, not tensors\n" * 3)
    elif case == "offsets_past_end":
        _header_file(
            path, {"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]}}, b"\0" * 8
        )
    elif case == "gap":
        _header_file(
            path, {"w": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]}}, b"\0" * 8
        )
    elif case == "size_mismatch":
        _header_file(path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8)
    elif case == "not_json":
        path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(InvalidCheckpointError, match=message):
        open_checkpoint(path)


def test_refuses_unknown_dtype(tmp_path: Path) -> None:
    path = _header_file(
        tmp_path / "x.safetensors",
        {"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}},
        b"\0\0",
    )
    with pytest.raises(UnsupportedDtypeError, match="Q4"):
        open_checkpoint(path)


def test_refuses_index_that_escapes_or_disagrees(steps: dict[str, list[Path]]) -> None:
    path = steps["sharded"][0]
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "../../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(InvalidCheckpointError, match="elsewhere"):
        open_checkpoint(path)
    index["weight_map"][name] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(InvalidCheckpointError, match="does not match its shards"):
        open_checkpoint(path)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidCheckpointError, match="does not exist"):
        open_checkpoint(tmp_path / "nope")


def test_a_window_of_a_file_truncated_while_open_is_refused_not_a_crash(tmp_path: Path) -> None:
    """A mapped window past the file's end would raise SIGBUS on access; it is an error."""
    path = write_checkpoint(
        tmp_path / "w.safetensors",
        {"w": torch.arange(1 << 16, dtype=torch.int16).view(torch.bfloat16)},
        layout="file",
    )
    ref = open_checkpoint(path).tensors["w"]
    with TensorFile(ref) as file:
        np.testing.assert_array_equal(file.map_window(16, 4), np.arange(16, 20))
        os.truncate(path, ref.begin + 1000)
        with pytest.raises(InvalidCheckpointError, match="truncated"):
            file.map_window(0, 1 << 16)
