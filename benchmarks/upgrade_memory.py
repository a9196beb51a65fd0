"""Peak memory of ``deltaroll upgrade-store`` on a v1 store holding one big tensor.

A v1 store is written by the last Deltaroll that wrote v1 (commit 0b2162e^, its own CLI, as
tests/store/data/v1_store/HOW.md does): an anchor whose big bf16 tensor is carried in 64 MiB zstd
chunks, and a second version whose delta changes 1 % of it sparsely. Then, in the same run, the
same store is converted by the baseline tree (``--baseline-ref``, extracted with ``git archive``)
and by this tree, each in its own process, whose peak RSS (``wait4``'s ``ru_maxrss``) is the
measurement, twice:

- ``rebuild``: the versions rebuilt from v1 and checked, with the push replaced by nothing (what
  the conversion itself holds);
- ``full``: the whole command, pushes included.

Prints a table on stderr and one JSON object as the last line of stdout.
Run: .venv/bin/python benchmarks/upgrade_memory.py [--mib 512] [--baseline-ref 14e408a]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from source_tree import operator_tree

REPO = Path(__file__).resolve().parents[1]
V1_REF = "0b2162e^"
MODEL = "big"
# The child: convert the store at argv[1]; argv[2] "rebuild" pushes nothing.
CHILD = """
import sys, types
from deltaroll.store import Store
from deltaroll.store import upgrade
if sys.argv[2] == "rebuild":
    def push(self, model, checkpoint, **kwargs):
        return types.SimpleNamespace(version=checkpoint.name)
    Store.push = push
    upgrade.set_name = lambda *args, **kwargs: None
result = upgrade.upgrade_model(Store("file://" + sys.argv[1]), "big")
assert len(result.versions) == 2, result
"""


def write_checkpoints(work: Path, mib: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    elements = (mib << 20) // 2
    big = rng.integers(0, 1 << 16, elements, dtype=np.uint16)
    small = rng.integers(0, 1 << 16, 4096, dtype=np.uint16)
    step0, step1 = work / "step0", work / "step1"
    for step in (step0, step1):
        step.mkdir()
        (step / "config.json").write_text('{"model_type": "big"}')
    save_file({"big": big.view(np.float16), "small": small.view(np.float16)},
              str(step0 / "model.safetensors"))  # fmt: skip
    changed = rng.choice(elements, elements // 100, replace=False)
    big[changed] ^= 1
    save_file({"big": big.view(np.float16), "small": small.view(np.float16)},
              str(step1 / "model.safetensors"))  # fmt: skip
    return step0, step1


def v1_store(work: Path, v1_code: Path, step0: Path, step1: Path) -> Path:
    store = work / "v1_store"
    old = [sys.executable, "-m", "deltaroll.cli.main"]
    env = {**os.environ, "PYTHONPATH": str(v1_code), "DELTAROLL_CACHE_DIR": str(work / "c")}
    for args in (
        ["push", f"file://{store}", MODEL, str(step0), "--anchor", "--name", "step-0"],
        ["push", f"file://{store}", MODEL, str(step1), "--base", str(step0), "--name", "step-1"],
    ):
        subprocess.run(old + args, check=True, env=env, capture_output=True)
    return store


def peak_rss_mib(code: Path, store: Path, mode: str, work: Path) -> float:
    copy = work / f"store-{code.parent.name}-{mode}"
    shutil.copytree(store, copy)
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "DELTAROLL_CACHE_DIR": str(work / f"cache-{code.parent.name}-{mode}"),
        "TMPDIR": str(work),
    }
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(copy), mode], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {code.parent.name} upgrade ({mode}) failed")
    shutil.rmtree(copy)
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the big tensor")
    parser.add_argument("--baseline-ref", default="14e408a", help="the tree to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upgrade-memory-") as tmp:
        work = Path(tmp)
        step0, step1 = write_checkpoints(work, args.mib)
        store = v1_store(work, operator_tree(V1_REF, work / "v1"), step0, step1)
        shutil.rmtree(step0), shutil.rmtree(step1)
        trees = {"baseline": operator_tree(args.baseline_ref, work / "baseline"),
                 "this": REPO / "operator"}  # fmt: skip
        peaks = {
            (tree, mode): peak_rss_mib(code, store, mode, work)
            for mode in ("rebuild", "full")
            for tree, code in trees.items()
        }
    result: dict[str, object] = {"tensor_mib": args.mib, "baseline_ref": args.baseline_ref}
    print(f"{'mode':8} {'baseline MiB':>13} {'this MiB':>9} {'ratio':>6}", file=sys.stderr)
    for mode in ("rebuild", "full"):
        base, this = peaks["baseline", mode], peaks["this", mode]
        result[mode] = {"baseline_peak_rss_mib": round(base, 1),
                        "peak_rss_mib": round(this, 1), "ratio": round(this / base, 3)}  # fmt: skip
        print(f"{mode:8} {base:13.1f} {this:9.1f} {this / base:6.2f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
