"""Tiny real checkpoints for the engine tests: a Llama with byte-level tokens, really trained.

Three versions of one model (trained by :mod:`deltaroll_demo.training`): ``v1`` after two AdamW
steps, ``v2`` one more step, and
``diverged``: v2 after one step with a huge learning rate, which an /eval must score worse.
Saved in bf16 with ``save_pretrained`` (config.json + model.safetensors, no tokenizer files).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deltaroll_demo.training import Trainer

TRAINING_TEXT = "the quick brown fox jumps over the lazy dog. " * 3
EVAL_TEXTS = ["the quick brown fox", "jumps over the lazy dog."]
PROMPT = "the quick"
MAX_TOKENS = 12


@dataclass(frozen=True)
class TinyCheckpoints:
    v1: Path
    v2: Path
    diverged: Path
    v1_greedy_completion: str  # what transformers' own loader + generate() give for PROMPT
    v1_eval_loss: float  # token-weighted mean loss of EVAL_TEXTS under v1


def build_checkpoints(root: Path) -> TinyCheckpoints:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor([list(TRAINING_TEXT.encode())])
    trainer = Trainer(model, lambda _: model(input_ids=ids, labels=ids).loss, lr=3e-3)

    def save(name: str) -> Path:
        path = root / name
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(path)
        return path

    trainer.step(3e-3)
    trainer.step(3e-3)
    v1 = save("v1")
    trainer.step(3e-3)
    v2 = save("v2")
    trainer.step(1.0)
    diverged = save("diverged")
    completion, loss = _reference_outputs(v1)
    return TinyCheckpoints(v1, v2, diverged, completion, loss)


def _reference_outputs(path: Path) -> tuple[str, float]:
    """Greedy completion and eval loss computed by transformers' own loader, not the engine's."""
    model = LlamaForCausalLM.from_pretrained(path, local_files_only=True).eval()
    prompt = torch.tensor([list(PROMPT.encode())])
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            pad_token_id=0,
        )
        completion = bytes(out[0, prompt.shape[1] :].tolist()).decode("utf-8", errors="replace")
        total, count = 0.0, 0
        for text in EVAL_TEXTS:
            ids = torch.tensor([list(text.encode())])
            total += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return completion, total / count


def build_with_one_thread(root: Path) -> TinyCheckpoints:
    """:func:`build_checkpoints` with torch on one thread, as the engine runs: bit-identical
    arithmetic, and no core-hogging on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_checkpoints(root)
    finally:
        torch.set_num_threads(threads)
