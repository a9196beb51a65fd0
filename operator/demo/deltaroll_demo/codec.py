"""The codec-only demo (``python -m deltaroll_demo codec``): real training, real deltas, no cluster.

Trains a small byte-level language model (about 2M parameters) with AdamW at lr 3e-6 on real text,
saving a bf16 Hugging Face checkpoint (two shards + index, config, tokenizer) after every step.
Then, with the same commands a user would run:

1. ``deltaroll diff`` each step against the previous one, and print what changed and the sizes;
2. ``deltaroll apply --in-place`` the chain of deltas to a copy of step 0 (a "serving" copy) and
   ``deltaroll verify`` that it is exactly the last step, bit for bit;
3. roll back one step with ``deltaroll apply --in-place --reverse`` and verify again.

The last line is one JSON object with the measured sizes, for scripts and CI.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import redirect_stdout, suppress
from io import StringIO
from pathlib import Path
from typing import Any

from deltaroll_demo.training import Trainer

DEFAULT_WORKDIR = Path(".demo/codec")  # recreated on every run
STEPS = 3
LEARNING_RATE = 3e-6

TEXT = (
    "Deltaroll ships new versions of large model weights to inference fleets on Kubernetes by "
    "moving only what changed. A training run produces checkpoint after checkpoint; between two "
    "consecutive bf16 checkpoints only a few percent of the elements differ bit for bit. The "
    "deltas are lossless and reversible: rolling back applies the same delta again."
)


def train_checkpoints(workdir: Path) -> list[Path]:
    """Train for ``STEPS`` AdamW steps; save step-0..step-N as sharded bf16 checkpoints."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    torch.manual_seed(0)
    hidden, vocab, layers = 256, 256, 4
    embed, norm = nn.Embedding(vocab, hidden), nn.LayerNorm(hidden)
    blocks = nn.ModuleList(
        nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        for _ in range(layers)
    )
    head = nn.Linear(hidden, vocab, bias=False)
    model = nn.ModuleDict({"embed_tokens": embed, "layers": blocks, "norm": norm, "lm_head": head})
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long)

    def loss(step: int) -> torch.Tensor:
        window = data[step * 7 : step * 7 + 129]
        x = embed(window[:-1])
        for block in blocks:
            x = x + block(x)
        return nn.functional.cross_entropy(head(norm(x)), window[1:])

    trainer = Trainer(model, loss, lr=LEARNING_RATE)
    paths = []
    for step in range(STEPS + 1):
        if step:
            trainer.step()
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in state.items()}
        paths.append(_save(workdir / f"step-{step}", tensors, save_file))
    return paths


def _save(path: Path, tensors: dict[str, Any], save_file: Any) -> Path:
    """Write a sharded Hugging Face checkpoint directory."""
    path.mkdir(parents=True)
    names = list(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2]}
    halves["model-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    weight_map = {}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (path / "config.json").write_text(json.dumps({"model_type": "deltaroll-demo", "vocab": 256}))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"type": "bytes"}}))
    return path


def run(*args: object) -> dict[str, Any]:
    """Run one ``deltaroll`` command as a user would (with ``--json``); return its JSON result.

    ``verify`` reports a mismatch as an error after printing its report; the report is returned.
    """
    from deltaroll.checkpoint.errors import CheckpointMismatchError
    from deltaroll.cli.main import build_app

    buffer = StringIO()
    with redirect_stdout(buffer), suppress(CheckpointMismatchError):
        build_app()(args=[*map(str, args), "--json"], standalone_mode=False)
    return dict(json.loads(buffer.getvalue()))


def main(workdir: Path = DEFAULT_WORKDIR) -> dict[str, Any]:
    """Run the demo in ``workdir`` (recreated); returns the result printed as the last line."""
    started = time.perf_counter()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"training {STEPS} AdamW steps (lr {LEARNING_RATE}) into {workdir} ...")
    steps = train_checkpoints(workdir)
    print(f"{'delta':<16}{'changed':>10}{'delta size':>14}{'checkpoint':>14}{'ratio':>9}")
    deltas, pairs = [], []
    for before, after in zip(steps, steps[1:], strict=False):
        delta = workdir / f"delta-{before.name}-to-{after.name}"
        summary = run("diff", before, after, "-o", delta)
        deltas.append(delta)
        changed = summary["changed_elements"] / summary["total_elements"]
        ratio = summary["delta_bytes"] / summary["target_bytes"]
        pairs.append({**summary, "changed_fraction": changed, "ratio": ratio})
        print(
            f"{after.name:<16}{changed:>10.2%}{summary['delta_bytes'] / 2**20:>11.2f} MiB"
            f"{summary['target_bytes'] / 2**20:>11.2f} MiB{ratio:>9.2%}"
        )
    serving = workdir / "serving"
    shutil.copytree(steps[0], serving)
    for delta in deltas:
        run("apply", serving, delta, "--in-place")
    forward_ok = run("verify", serving, deltas[-1])["matches"]
    print(f"applied {len(deltas)} deltas in place to step-0: is {steps[-1].name}: {forward_ok}")
    run("apply", serving, deltas[-1], "--in-place", "--reverse")
    rollback_ok = run("verify", serving, deltas[-1], "--side", "base")["matches"]
    print(f"rolled back one step with --reverse: is {steps[-2].name}: {rollback_ok}")
    result = {
        "demo": "codec",
        "ok": bool(forward_ok and rollback_ok),
        "steps": STEPS,
        "learning_rate": LEARNING_RATE,
        "target_bytes": pairs[-1]["target_bytes"],
        "delta_bytes": [p["delta_bytes"] for p in pairs],
        "changed_fraction": [round(p["changed_fraction"], 5) for p in pairs],
        "delta_to_checkpoint_ratio": [round(p["ratio"], 5) for p in pairs],
        "seconds": round(time.perf_counter() - started, 2),
        "workdir": str(workdir),
    }
    print(json.dumps(result, sort_keys=True))
    return result
