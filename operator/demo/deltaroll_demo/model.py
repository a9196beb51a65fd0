"""The demo's model: a small Llama with byte-level tokens, trained for real on the Zen of Python.

Random init (seeded), AdamW on the text that ships with every Python (``import this``), saved in
bf16 with ``save_pretrained`` (config.json + model.safetensors, no tokenizer: the reference
engine falls back to bytes). Three versions:

- ``v1``: a few steps at a usual learning rate, from random init;
- ``v2``: v1 plus a few steps at a small rate, the everyday RL/fine-tuning case whose bf16
  checkpoints differ in a fraction of their elements;
- ``v3``: v2 plus one step at a huge learning rate; its eval loss is far worse, which the
  rollout's analysis has to catch.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaroll_demo.training import Trainer

SEED = 0
SEQUENCE = 128
# (version, AdamW steps, learning rate), in order; each version continues from the previous one.
DEMO_SCHEDULE: tuple[tuple[str, int, float], ...] = (
    ("v1", 6, 1e-3),
    ("v2", 2, 1e-5),
    ("v3", 1, 10.0),
)
TRAINING_STEPS = sum(steps for _, steps, _ in DEMO_SCHEDULE)
EVAL_LINES = 4


def zen_of_python() -> str:
    """The text of ``import this`` (stored rot13-encoded in the ``this`` module)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def eval_texts() -> list[str]:
    """Lines the analysis scores every version on (seen in training, so a good model does well)."""
    lines = [line for line in zen_of_python().splitlines() if len(line) > 20]
    return lines[:EVAL_LINES]


@dataclass(frozen=True)
class Checkpoints:
    """The three saved versions and what they are."""

    paths: dict[str, Path]  # "v1" | "v2" | "v3" -> checkpoint directory
    parameters: int
    train_losses: dict[str, float]  # last training loss before saving each version

    def full_bytes(self, label: str) -> int:
        return sum(p.stat().st_size for p in self.paths[label].iterdir() if p.is_file())


def train(
    root: Path,
    on_step: Callable[[str, int, int], None] | None = None,
    schedule: Sequence[tuple[str, int, float]] = DEMO_SCHEDULE,
    shape: Mapping[str, int] | None = None,
) -> Checkpoints:
    """Train and save each version of ``schedule`` under ``root`` (v1, v2, v3 by default);
    ``on_step(version, step, total)`` reports. ``shape`` replaces LlamaConfig sizes (a bigger
    model for a benchmark)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(SEED)
    sizes: dict[str, Any] = {
        "vocab_size": 256,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **(shape or {}),
    }
    config = LlamaConfig(
        max_position_embeddings=SEQUENCE,
        tie_word_embeddings=False,
        **sizes,
    )
    model = LlamaForCausalLM(config)
    data = torch.tensor(list(zen_of_python().encode()))
    windows = data[: (len(data) // SEQUENCE) * SEQUENCE].view(-1, SEQUENCE)
    trainer = Trainer(model, lambda _: model(input_ids=windows, labels=windows).loss)
    losses: dict[str, float] = {}
    paths: dict[str, Path] = {}

    def steps(label: str, count: int, lr: float) -> None:
        for step in range(count):
            losses[label] = trainer.step(lr)
            if on_step is not None:
                on_step(label, step + 1, count)
        paths[label] = root / label
        saved: Any = copy.deepcopy(model)  # transformers' typing of .to() trips mypy
        saved.to(torch.bfloat16).save_pretrained(paths[label])

    for label, count, lr in schedule:
        steps(label, count, lr)
    parameters = sum(p.numel() for p in model.parameters())
    return Checkpoints(paths, parameters, losses)
