"""Load a checkpoint directory into a fresh model, verify it, and say which version it is.

A reload must never leave the engine half-swapped: everything here builds a *new*
:class:`LoadedModel` next to the one being served, and raises :class:`ModelLoadError` (leaving
the served one untouched) unless every tensor of the checkpoint landed in the model with its own
name, dtype and shape, and nothing the model needs is missing. Only safetensors are read; no
pickle, no remote code, no network (``local_files_only``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deltaroll.checkpoint import open_checkpoint
from deltaroll.checkpoint.digests import aux_digests
from deltaroll.engines.errors import ModelLoadError
from deltaroll.engines.reference.tokenizer import TextTokenizer, load_tokenizer
from deltaroll.engines.weights_identity import TensorIdentity, tensor_identity, version_id
from deltaroll.errors import DeltarollError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve, with the identity of the tensors it holds."""

    path: Path
    model: PreTrainedModel
    tokenizer: TextTokenizer
    tensors: tuple[TensorIdentity, ...]
    version: str
    files: tuple[tuple[str, str], ...] = ()  # (name, digest) of the files loaded with it

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def load_model(
    model_dir: Path, *, device: str = "cpu", expected_version: str | None = None
) -> LoadedModel:
    """Load ``model_dir`` (config.json + safetensors) into a new model on ``device``."""
    model_dir = Path(model_dir).resolve()
    files = checkpoint_files(model_dir)
    try:
        return _load(model_dir, files, device, expected_version)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers/safetensors raise many types for a bad directory
        raise ModelLoadError(
            f"{model_dir}: cannot be loaded ({type(exc).__name__}: {exc}); "
            "check that it is a complete Hugging Face causal-LM checkpoint"
        ) from exc


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory, as :mod:`deltaroll.checkpoint` sees it.

    Cheap (headers only, no torch), so callers use it to fail fast on a wrong path.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: no such directory; pass a checkpoint directory")
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir}: has no config.json; it is not a model checkpoint")
    try:
        checkpoint = open_checkpoint(model_dir)
    except DeltarollError as exc:
        raise ModelLoadError(f"{model_dir}: is not a usable checkpoint: {exc}") from exc
    return [weight.path for weight in checkpoint.weight_files]


def _load(
    model_dir: Path, files: list[Path], device: str, expected_version: str | None
) -> LoadedModel:
    from safetensors.torch import load
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    state: dict[str, torch.Tensor] = {}
    for file in files:
        # Read the bytes, don't memory-map them: the agent patches these files in place, and a
        # mapped tensor would change under the engine without a reload. Shards are disjoint.
        state.update({name: t.to(device) for name, t in load(file.read_bytes()).items()})

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    # Every weight is replaced below: drawing random ones first was 80 % of a reload's CPU.
    # no_init_weights swaps torch's init functions process-wide: loads must not overlap (the
    # engine's reload lock serialises them; inference never initialises weights).
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config).to(device)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ModelLoadError(
            f"{model_dir}: tensors the model ({config.model_type}) has no place for: "
            f"{sorted(result.unexpected_keys)[:5]}; the weights do not match config.json"
        )
    model.tie_weights()
    _check_nothing_missing(model_dir, model, state, result.missing_keys)
    model.eval()

    held = model.state_dict()
    tensors = tuple(tensor_identity(name, held[name]) for name in sorted(state))
    # The id covers the files loaded with the weights (config, tokenizer), as on disk.
    aux_files = tuple(sorted(aux_digests(open_checkpoint(model_dir)).items()))
    version = version_id(tensors, aux_files)
    if expected_version is not None and version != expected_version:
        raise ModelLoadError(
            f"{model_dir}: holds version {version}, not the expected {expected_version}; "
            "the directory was modified or is not that version: pull it again"
        )
    tokenizer = load_tokenizer(model_dir, int(config.vocab_size))
    return LoadedModel(model_dir, model, tokenizer, tensors, version, aux_files)


def _check_nothing_missing(
    model_dir: Path, model: PreTrainedModel, state: dict[str, torch.Tensor], missing: list[str]
) -> None:
    """A key the checkpoint lacks is fine only if it is tied to one it has (e.g. lm_head)."""
    held = model.state_dict()
    loaded_storage = {t.untyped_storage().data_ptr() for t in state.values()}
    untied = [k for k in missing if held[k].untyped_storage().data_ptr() not in loaded_storage]
    if untied:
        raise ModelLoadError(
            f"{model_dir}: lacks tensors the model needs: {sorted(untied)[:5]}; "
            "the checkpoint is incomplete"
        )
