"""Loading checkpoint directories into the reference engine, in process (no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from deltaroll.checkpoint import checkpoint_version
from deltaroll.engines import ModelLoadError
from deltaroll.engines.reference.loading import load_model


def save_llama(path: Path, *, tied: bool, vocab_size: int = 256, **save_kwargs) -> Path:
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    LlamaForCausalLM(config).save_pretrained(path, **save_kwargs)
    return path


def test_tied_embeddings_load_without_lm_head_in_the_file(tmp_path):
    path = save_llama(tmp_path / "tied", tied=True)
    assert "lm_head.weight" not in load_file(path / "model.safetensors")
    loaded = load_model(path)
    assert loaded.version == checkpoint_version(path)
    assert "lm_head.weight" not in {t.name for t in loaded.tensors}
    model = loaded.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_a_sharded_checkpoint_has_the_same_version_as_on_disk(tmp_path):
    path = save_llama(tmp_path / "sharded", tied=False, max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("*.safetensors"))) > 1
    assert load_model(path).version == checkpoint_version(path)


def test_a_checkpoint_missing_a_tensor_the_model_needs_is_refused(tmp_path):
    path = save_llama(tmp_path / "incomplete", tied=True)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lacks tensors .*layers\.1\.mlp\.up_proj"):
        load_model(path)


def test_an_extra_tensor_is_refused(tmp_path):
    path = save_llama(tmp_path / "extra", tied=True)
    tensors = load_file(path / "model.safetensors")
    tensors["model.adapter.weight"] = torch.zeros(2)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="no place for.*model.adapter.weight"):
        load_model(path)


def test_an_index_naming_a_missing_or_foreign_shard_is_refused(tmp_path):
    path = save_llama(tmp_path / "sharded", tied=False, max_shard_size="40KB")
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    moved = path / "moved-away"
    (path / first).rename(moved)
    with pytest.raises(ModelLoadError, match=f"names shard '{first}', which is missing"):
        load_model(path)
    moved.rename(path / first)
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="not a usable checkpoint"):
        load_model(path)


def test_hidden_and_stray_files_are_not_weights(tmp_path):
    """Only model.safetensors holds weights; a hidden temp file is not part of the checkpoint,
    while a visible copy is a file the pod could load, so the version id covers it."""
    path = save_llama(tmp_path / "m", tied=True)
    version = checkpoint_version(path)
    (path / ".model.safetensors.tmp").write_bytes(b"half-written")
    assert load_model(path).version == version
    shutil.copyfile(path / "model.safetensors", path / "model-copy.safetensors")
    assert load_model(path).version == checkpoint_version(path) != version


def test_byte_tokens_need_a_vocabulary_of_256(tmp_path):
    path = save_llama(tmp_path / "small-vocab", tied=True, vocab_size=100)
    with pytest.raises(ModelLoadError, match="vocabulary of 100 < 256"):
        load_model(path)


def test_weights_that_are_not_the_expected_version_are_refused(tmp_path):
    path = save_llama(tmp_path / "m", tied=True)
    with pytest.raises(ModelLoadError, match="not the expected 0{32}"):
        load_model(path, expected_version="0" * 32)
