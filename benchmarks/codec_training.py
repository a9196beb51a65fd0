"""Benchmark data: consecutive bf16 checkpoints of a small transformer trained with real AdamW
(the one trainer, :mod:`deltaroll_demo.training`).

fp32 master weights, real optimizer steps at a fine-tuning learning rate on real text (the
standard library's own Python source, which ships with every Python), and a bf16 copy saved as
safetensors after every step, the way an RL or fine-tuning run publishes weights. Checkpoints are
cached in a work directory keyed by the run's settings, so a second run only measures.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from deltaroll_demo.training import Trainer


@dataclass(frozen=True)
class TrainingSettings:
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    steps: int
    batch: int
    sequence: int
    learning_rate: float = 3e-6
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# About 25M parameters: the size the issue asks for, trainable in seconds per step on a laptop.
FULL = TrainingSettings(
    hidden_size=512, intermediate_size=1408, layers=8, heads=8, steps=6, batch=4, sequence=128
)
# A smoke-test model: same code path, under a second of training.
QUICK = TrainingSettings(
    hidden_size=128, intermediate_size=352, layers=2, heads=4, steps=3, batch=2, sequence=64
)


def stdlib_text(limit_bytes: int) -> np.ndarray:
    """Real text that ships with Python: its standard library's source, read in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[bytes] = []
    size = 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= limit_bytes:
            break
    return np.frombuffer(b"".join(chunks)[:limit_bytes], dtype=np.uint8)


def build_model(settings: TrainingSettings) -> torch.nn.Module:
    """A Llama-style causal LM over bytes (vocabulary 256), so no tokenizer is needed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=256,
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.sequence,
        tie_word_embeddings=False,
    )
    torch.manual_seed(settings.seed)
    return LlamaForCausalLM(config)


def bf16_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: tensor.detach().to(torch.bfloat16).contiguous()
        for name, tensor in model.state_dict().items()
    }


def trained_checkpoints(settings: TrainingSettings, workdir: Path) -> tuple[list[Path], int]:
    """Paths of ``steps + 1`` bf16 checkpoints (the initial weights, then one per AdamW step)
    and the parameter count; trains only if the cache in ``workdir`` lacks them."""
    from safetensors.torch import save_file

    run_dir = workdir / f"run-{settings.key()}"
    paths = [run_dir / f"step-{step:03d}.safetensors" for step in range(settings.steps + 1)]
    info_path = run_dir / "run.json"
    if info_path.exists() and all(path.exists() for path in paths):
        return paths, int(json.loads(info_path.read_text())["parameters"])
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(settings)
    parameters = sum(p.numel() for p in model.parameters())
    text = torch.from_numpy(stdlib_text(4 << 20).astype(np.int64))
    generator = torch.Generator().manual_seed(settings.seed)

    def loss(_: int) -> torch.Tensor:
        starts = torch.randint(
            0, text.numel() - settings.sequence, (settings.batch,), generator=generator
        )
        batch = torch.stack([text[s : s + settings.sequence] for s in starts.tolist()])
        return model(input_ids=batch, labels=batch).loss

    trainer = Trainer(model, loss, lr=settings.learning_rate)
    save_file(bf16_state(model), str(paths[0]))
    for step in range(1, settings.steps + 1):
        trainer.step()
        save_file(bf16_state(model), str(paths[step]))
    info_path.write_text(json.dumps({"parameters": parameters, **asdict(settings)}))
    return paths, parameters
