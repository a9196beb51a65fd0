"""Memory of the engine extension's in-memory patch of one large tensor changed everywhere.

A dense change (an fp32 training step, a re-initialised embedding) is checked against both
sides' digests, so every rank exchanges the whole tensor's base values. This benchmark measures
what that costs a rank beyond the weights it holds, for this tree's code and a baseline (by
default ``main``, extracted with ``git archive``) in the same run:

- one bf16 tensor of ``--elements`` elements (an embedding), every element moved by one ULP,
  and the Deltaroll delta between the two versions (dense);
- per side, a child process that loads the base into a parameter, joins a one-rank gloo group
  (so the exchange runs through a real ``all_reduce``), resets its peak RSS
  (``/proc/self/clear_refs``), runs ``patch_on_rank`` and reports the peak RSS above what it held
  before (``VmHWM`` - ``VmRSS``), the time, and whether the parameter now equals the target bit
  for bit.

Prints a table on stderr and one JSON object as the last line of stdout, with the ratio of this
tree's extra peak to the baseline's and the extra bytes per element of each.
Run: .venv/bin/python benchmarks/extension_memory.py [--elements 32e6] [--baseline-ref main]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from source_tree import operator_tree

REPO = Path(__file__).resolve().parents[1]
NAME = "model.embed_tokens.weight"
WIDTH = 4096


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_main(workdir: Path) -> None:
    """``extension_memory.py _child WORKDIR``: patch the base in memory, print the costs."""
    import torch
    import torch.distributed as dist
    from safetensors.torch import load_file

    import deltaroll.codec.kernels  # noqa: F401  (loaded before measuring, as an engine does)
    from deltaroll.api.weight_change import LiveApplyRequest
    from deltaroll.engines.extension.ranked_patch import patch_on_rank
    from engine_patch_gpu import Model, bit_exact

    request = LiveApplyRequest.model_validate_json((workdir / "request.json").read_text())
    model = Model(load_file(workdir / "base" / "model.safetensors"), "cpu")
    dist.init_process_group(
        "gloo", init_method=f"file://{workdir / f'rendezvous-{os.getpid()}'}", rank=0, world_size=1
    )

    def reduce_max(tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)

    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from here
    held_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    result = patch_on_rank(model, request, rank=0, reduce_max=reduce_max)
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    dist.destroy_process_group()
    report = {
        "outcome": result.outcome,
        "reason": result.reason,
        "seconds": seconds,
        "extra_peak_mb": (peak_kb - held_kb) / 1024,
        "bit_exact": bit_exact(model, workdir / "target", "cpu"),
    }
    print(json.dumps(report))


def build(workdir: Path, elements: int) -> dict[str, Any]:
    """Base and target checkpoints of one tensor, every element one ULP apart, and the delta."""
    import torch
    from safetensors.torch import save_file

    from deltaroll.api.weight_change import LiveApplyRequest
    from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest

    rows = max(1, elements // WIDTH)
    gen = torch.Generator().manual_seed(0)
    base = (0.02 * torch.randn(rows, WIDTH, generator=gen)).to(torch.bfloat16)
    target = (base.view(torch.int16) ^ 1).view(torch.bfloat16)
    for side, tensor in (("base", base), ("target", target)):
        (workdir / side).mkdir()
        save_file({NAME: tensor}, workdir / side / "model.safetensors")
    del base, target
    diff_checkpoints(workdir / "base", workdir / "target", workdir / "delta")
    manifest = read_delta_manifest(workdir / "delta")
    assert manifest.base_version is not None
    kinds = [e.kind for e in manifest.tensors]
    request = LiveApplyRequest(
        delta_path=str(workdir / "delta"),
        from_version=manifest.base_version,
        to_version=manifest.target_version,
    )
    (workdir / "request.json").write_text(request.model_dump_json())
    return {"elements": rows * WIDTH, "tensor_bytes": rows * WIDTH * 2, "kinds": kinds}


def run_child(workdir: Path, operator_dir: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{operator_dir}{os.pathsep}{REPO / 'benchmarks'}")
    env |= {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "_child", str(workdir)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--elements", type=float, default=32e6)
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        setup = build(workdir, int(args.elements))
        (workdir / "baseline").mkdir()
        sides = {
            "baseline": run_child(workdir, operator_tree(args.baseline_ref, workdir / "baseline")),
            "this": run_child(workdir, REPO / "operator"),
        }
    per_element = {
        side: report["extra_peak_mb"] * 2**20 / setup["elements"] for side, report in sides.items()
    }
    result = {
        **setup,
        "baseline_ref": args.baseline_ref,
        **{
            side: {**report, "extra_bytes_per_element": per_element[side]}
            for side, report in sides.items()
        },
        "extra_peak_ratio": sides["this"]["extra_peak_mb"] / sides["baseline"]["extra_peak_mb"],
    }
    print(f"dense patch of one bf16 tensor, {setup['elements']:,} elements", file=sys.stderr)
    print(
        f"{'code':<10} {'extra peak MB':>14} {'B/element':>10} {'seconds':>8} exact",
        file=sys.stderr,
    )
    for side, report in sides.items():
        print(
            f"{side:<10} {report['extra_peak_mb']:>14.0f} {per_element[side]:>10.1f} "
            f"{report['seconds']:>8.2f} {report['bit_exact']}",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(Path(sys.argv[2]))
    else:
        main()
