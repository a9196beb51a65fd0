"""The engine's pause during a version change: full reload from disk vs the in-memory apply.

The reference engine (``deltaroll engine serve``, its own process, one torch thread) serves a
steady stream of ``/eval`` requests from client threads while its version changes, for two model
sizes: the demo's Llama shape and one over 10x larger, each trained for real (AdamW on the
demo's schedule: v1 after six AdamW steps at 1e-3, v2 two more at a fine-tuning rate of 1e-5,
saved in bf16 with ``save_pretrained``; the demo model on its text, the larger one on the
standard library's source). The delta v1 -> v2 is computed with ``diff_checkpoints``. A third
run, ``large@demo-count``, compares the sizes at the same number of changed elements: the larger
model's v1 with as many of its v2's changed elements (drawn uniformly, seeded) as the demo's
v1 -> v2 changes.

Per size, in the same engine process and the same run:

- ``reload``: ``POST /update_weights_from_disk`` with v2's directory. The pod is out of its
  Service while the engine loads (the agent closes its readiness gate), so the pause is the
  reload's duration;
- ``in-memory``: ``POST /apply_delta`` with the delta (v1 -> v2, then back, ``--repeats``
  times). The engine holds new requests and drains the ones in flight; the pause is the engine's
  own measure (first request held, or the drain's end if later -> requests admitted on the new
  version), the drain reported apart.

Every response is checked against both versions' answers (v1's from the engine before any
change, v2's from the engine after the full reload: the in-memory apply must give bit-identical
losses): a response that matches neither counts as failed, as does any non-200. p99 is the
latency of the requests of the in-memory runs (the change falls inside them). Prints a table on
stderr and one JSON object as the last line of stdout.

Run: flock /tmp/bench.lock .venv/bin/python benchmarks/pause.py [--workdir DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from codec_training import TrainingSettings, build_model, stdlib_text  # noqa: E402
from rollout import free_port  # noqa: E402

EVAL_TEXTS = ["def main(argv=None):\n    parser = argparse.ArgumentParser()"]
CLIENTS = 2
#: The larger model with as many changed elements as the demo's v1 -> v2 (the 1.3x target).
EQUAL = "large@demo-count"


#: The larger model: the demo's Llama scaled up (over 10x its parameters).
LARGE = TrainingSettings(
    hidden_size=512, intermediate_size=1536, layers=10, heads=8, steps=8, batch=8, sequence=128
)


def train_demo(root: Path) -> tuple[Path, Path, int]:
    """The demo's own model and schedule: v1 (6 AdamW steps at 1e-3), v2 (2 more at 1e-5)."""
    from deltaroll_demo.model import DEMO_SCHEDULE, train

    v1, v2 = root / "demo" / "v1", root / "demo" / "v2"
    if not (v2 / "config.json").exists():
        train(root / "demo", schedule=DEMO_SCHEDULE[:2])
    return v1, v2, parameters_of(v1)


def train_large(root: Path) -> tuple[Path, Path, int]:
    """The same schedule on :data:`LARGE`, on the standard library's source."""
    import copy

    import torch

    from deltaroll_demo.training import Trainer

    v1, v2 = root / "large" / "v1", root / "large" / "v2"
    if (v2 / "config.json").exists():
        return v1, v2, parameters_of(v1)
    model = build_model(LARGE)
    text = torch.from_numpy(stdlib_text(1 << 20).astype("int64"))
    batch = text[: LARGE.batch * LARGE.sequence].view(LARGE.batch, LARGE.sequence)
    trainer = Trainer(model, lambda _: model(input_ids=batch, labels=batch).loss)
    for path, steps, lr in ((v1, 6, 1e-3), (v2, 2, 1e-5)):
        for _ in range(steps):
            trainer.step(lr)
        saved: Any = copy.deepcopy(model)
        saved.to(torch.bfloat16).save_pretrained(path)
    return v1, v2, parameters_of(v1)


def parameters_of(path: Path) -> int:
    from deltaroll.checkpoint import open_checkpoint

    return sum(ref.numel for ref in open_checkpoint(path).tensors.values())


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 600) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Engine:
    """``deltaroll engine serve --kind reference`` on free loopback ports."""

    def __init__(self, model: Path, log: Path) -> None:
        port, admin = free_port(), free_port()
        deltaroll = Path(sys.executable).parent / "deltaroll"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(deltaroll), "engine", "serve", "--kind", "reference",
                 "--model-path", str(model), "--port", str(port), "--admin-port", str(admin)],
                stdout=subprocess.DEVNULL, stderr=out, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
        self.url, self.admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if call(self.url + "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"engine did not start: {log.read_text()[-2000:]}")

    def answer(self) -> tuple[int, Any]:
        status, body = call(self.url + "/eval", {"texts": EVAL_TEXTS}, timeout=60)
        return status, (body["version"], body["loss"]) if status == 200 else body

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


class Stream:
    """Client threads sending one request after another; records (start, seconds, answer)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.records: list[tuple[float, float, int, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                status, answer = self.engine.answer()
            except OSError as exc:
                status, answer = 0, str(exc)
            self.records.append((started, time.perf_counter() - started, status, answer))

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)  # the stream is steady before the change
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        for thread in self._threads:
            thread.join()


def changed_positions(v1: Path, v2: Path) -> dict[str, Any]:
    """``{tensor name: flat positions where v2's bits differ from v1's}`` (torch tensors)."""
    from safetensors.torch import load_file

    old, new = load_file(v1 / "model.safetensors"), load_file(v2 / "model.safetensors")
    return {
        name: (old[name].view(-1).view(torch_int(old[name])) != new[name].view(-1).view(
            torch_int(new[name]))).nonzero().view(-1)
        for name in old
    }  # fmt: skip


def torch_int(tensor: Any) -> Any:
    import torch

    return {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]


def count_changed(v1: Path, v2: Path) -> int:
    return sum(int(p.shape[0]) for p in changed_positions(v1, v2).values())


def with_changed_count(v1: Path, v2: Path, count: int, out: Path) -> Path:
    """v1 with ``count`` of v2's changed elements (drawn uniformly over the whole model, seeded):
    the same real AdamW values, as many of them as the smaller model changes, so the two sizes
    are compared at the same number of changed elements."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "config.json").exists():
        return out
    where = changed_positions(v1, v2)
    names = sorted(where)
    sizes = torch.tensor([where[n].shape[0] for n in names])
    offsets = torch.cumsum(sizes, 0) - sizes
    generator = torch.Generator().manual_seed(18)
    chosen = torch.randperm(int(sizes.sum()), generator=generator)[:count].sort().values
    old, new = load_file(v1 / "model.safetensors"), load_file(v2 / "model.safetensors")
    for index, name in enumerate(names):
        mine = chosen[(chosen >= offsets[index]) & (chosen < offsets[index] + sizes[index])]
        positions = where[name][mine - offsets[index]]
        flat = old[name].view(-1)
        flat[positions] = new[name].view(-1)[positions]
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(v2, partial, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file(old, partial / "model.safetensors", metadata={"format": "pt"})
    partial.rename(out)
    return out


def variants(workdir: Path, names: list[str]) -> list[tuple[str, Path, Path, int]]:
    """(name, v1, v2, parameters) per size, and the larger model at the demo's changed count."""
    models = workdir / "models"
    trained = {name: (train_demo if name == "demo" else train_large)(models) for name in names}
    out = [(name, v1, v2, parameters) for name, (v1, v2, parameters) in trained.items()]
    if len(trained) == 2:
        (demo_v1, demo_v2, _), (v1, v2, parameters) = trained["demo"], trained["large"]
        count = count_changed(demo_v1, demo_v2)
        out.append((EQUAL, v1, with_changed_count(v1, v2, count, models / "large" / "v2-equal"),
                    parameters))  # fmt: skip
    return out


def measure(
    name: str, v1: Path, v2: Path, parameters: int, workdir: Path, repeats: int
) -> dict[str, Any]:
    from deltaroll.checkpoint import diff_checkpoints

    delta = workdir / "deltas" / name
    if not (delta / "manifest.json.zst").exists():
        shutil.rmtree(delta, ignore_errors=True)
        diff_checkpoints(v1, v2, delta)
    run = Path(tempfile.mkdtemp(prefix=f"pause-{name}-", dir=workdir))
    serving = run / "weights"
    shutil.copytree(v1, serving)
    engine = Engine(serving, run / "engine.log")
    try:
        answer_v1 = engine.answer()[1]
        with Stream(engine) as reload_stream:
            started = time.perf_counter()
            status, body = call(engine.admin + "/update_weights_from_disk", {"model_path": str(v2)})
            reload_pause = time.perf_counter() - started
        assert status == 200, body
        answer_v2 = engine.answer()[1]
        assert answer_v2[0] == body["version"] != answer_v1[0]
        status, body = call(
            engine.admin + "/update_weights_from_disk", {"model_path": str(serving)}
        )
        assert status == 200 and engine.answer()[1] == answer_v1, body
        results, records = [], []
        for index in range(2 * repeats):
            forward = index % 2 == 0
            source, target = (answer_v1, answer_v2) if forward else (answer_v2, answer_v1)
            with Stream(engine) as stream:
                status, body = call(
                    engine.admin + "/apply_delta",
                    {"delta_path": str(delta), "from_version": source[0],
                     "to_version": target[0], "reverse": not forward},
                )  # fmt: skip
            assert status == 200, body
            results.append(body)
            records += stream.records
    finally:
        engine.stop()
    both = {tuple(answer_v1), tuple(answer_v2)}
    checked = [r for r in records + reload_stream.records]
    failed = sum(
        1 for _, _, status, answer in checked if status != 200 or tuple(answer) not in both
    )
    latencies = sorted(seconds for _, seconds, _, _ in records)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    changed = results[0]["changed_elements"]
    shutil.rmtree(run, ignore_errors=True)
    return {
        "name": name,
        "parameters": parameters,
        "changed_fraction": changed / parameters,
        "changed_elements": changed,
        "bytes_applied": results[0]["bytes_applied"],
        "reload_pause_s": reload_pause,
        "inmemory_pause_s": statistics.median(r["pause_s"] for r in results),
        "inmemory_pause_max_s": max(r["pause_s"] for r in results),
        "inmemory_write_s": statistics.median(r["write_s"] for r in results),
        "inmemory_drain_s": statistics.median(r["drain_s"] for r in results),
        "inmemory_prepare_s": statistics.median(r["prepare_s"] for r in results),
        "changes": len(results),
        "requests": len(checked),
        "failed_requests": failed,
        "p99_ms": p99 * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pause-bench")
    parser.add_argument("--repeats", type=int, default=3, help="forward+reverse pairs per size")
    parser.add_argument("--sizes", default="demo,large", help="demo, large or both")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = variants(args.workdir, args.sizes.split(","))
    sizes = [measure(*run, args.workdir, args.repeats) for run in runs]
    per_element = {s["name"]: s["inmemory_pause_s"] / s["changed_elements"] for s in sizes}
    out: dict[str, Any] = {
        "sizes": sizes,
        "inmemory_vs_reload": [s["inmemory_pause_s"] / s["reload_pause_s"] for s in sizes],
        "inmemory_pause_ms_per_percent": [
            1000 * s["inmemory_pause_s"] / (100 * s["changed_fraction"]) for s in sizes
        ],
    }
    if EQUAL in per_element:
        out["large_vs_demo_parameters"] = sizes[1]["parameters"] / sizes[0]["parameters"]
        out["pause_per_changed_element_large_vs_demo"] = per_element["large"] / per_element["demo"]
        out["pause_large_vs_demo_at_same_changed_elements"] = (
            per_element[EQUAL] / per_element["demo"]
        )
    for s in sizes:
        ms = {k: 1000 * s[k] for k in s if k.endswith("_s")}
        print(
            f"{s['name']:>16} {s['parameters']:>11,} params  changed {s['changed_fraction']:.2%}  "
            f"reload {ms['reload_pause_s']:8.1f} ms  in-memory {ms['inmemory_pause_s']:6.1f} ms "
            f"(write {ms['inmemory_write_s']:.1f}, drain {ms['inmemory_drain_s']:.1f})  "
            f"failed {s['failed_requests']}/{s['requests']}  p99 {s['p99_ms']:.1f} ms",
            file=sys.stderr,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
