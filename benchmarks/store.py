"""Measure what a pod downloads to move from version N to N+1 and N+5 through the S3 backend.

A small language model is trained with real AdamW steps (the shared test fixture, scaled up);
its checkpoints are pushed to a moto S3 server on 127.0.0.1 (anchor + deltas). In the same run:

- baseline: download the full checkpoint files (what a pod without Deltaroll fetches);
- delta N -> N+1 and N -> N+5: ``Store.pull`` from the local checkpoint N (download, verify,
  apply: "seconds"), and the download + verification alone ("transfer_seconds"); and a pull
  from nothing (anchor + deltas) for reference;
- N -> N+5 again after ``squash`` replaced the chain of five deltas by one direct delta.

On loopback the network is nearly free, so "seconds" is dominated by applying deltas on the CPU;
over a real network the transfer scales with bytes, which is the column that matters there.

Each measurement is repeated and the median time kept. Prints a table on stderr and one JSON
object as the last line of stdout (and to --json-out).
Run: .venv/bin/python benchmarks/store.py [--hidden 512] [--layers 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from deltaroll.store import Store  # noqa: E402
from deltaroll.store.backends.s3 import S3Backend  # noqa: E402
from deltaroll.store.cache import ObjectCache  # noqa: E402
from deltaroll.store.transfer import download_objects  # noqa: E402
from deltaroll.store.uri import parse_store_uri  # noqa: E402
from fixtures.checkpoints import train_checkpoints  # noqa: E402
from fixtures.s3 import moto_server  # noqa: E402

HOPS = (1, 5)


def use_s3(endpoint: str) -> None:
    """Point the AWS_* environment at ``endpoint`` and create the benchmark's bucket there."""
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="benchmark",
        AWS_SECRET_ACCESS_KEY="benchmark",
        AWS_ALLOW_HTTP="true",
    )
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="deltaroll-bench")


def median_time(repeat: int, action: Callable[[int], Any]) -> tuple[float, Any]:
    times, result = [], None
    for attempt in range(repeat):
        start = time.perf_counter()
        result = action(attempt)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    cleanup = ExitStack()  # stops moto's server
    work = Path(tempfile.mkdtemp(prefix="deltaroll-bench-store-"))
    try:
        use_s3(cleanup.enter_context(moto_server()))
        started = time.perf_counter()
        steps = max(HOPS) + 1
        ckpts = train_checkpoints(
            work / "ckpts", steps=steps, hidden=args.hidden, layers=args.layers, lr=args.lr
        )
        train_s = time.perf_counter() - started
        full_bytes = sum(f.stat().st_size for f in ckpts[0].iterdir())

        uri = "s3://deltaroll-bench/models"
        store = Store(uri, cache_dir=work / "cache")
        push_start = time.perf_counter()
        versions = [store.push("bench", ckpts[0]).version]
        for index in range(1, len(ckpts)):
            versions.append(store.push("bench", ckpts[index], base=ckpts[index - 1]).version)
        push_s = time.perf_counter() - push_start

        # Baseline: the raw checkpoint files in the same bucket, downloaded the same way.
        raw = S3Backend(parse_store_uri("s3://deltaroll-bench/raw"))
        n = 1
        files = sorted(ckpts[n + max(HOPS)].iterdir())
        raw.upload_files([(f, f"ckpt/{f.name}") for f in files])

        def download_full(attempt: int) -> int:
            dest = work / f"full-{attempt}"
            dest.mkdir()
            raw.download_files([(f"ckpt/{f.name}", dest / f.name) for f in files])
            return sum(f.stat().st_size for f in dest.iterdir())

        full_s, full_downloaded = median_time(args.repeat, download_full)
        rows: list[dict[str, Any]] = [
            {
                "case": "full checkpoint",
                "hops": None,
                "bytes": full_downloaded,
                "seconds": full_s,
                "transfer_seconds": round(full_s, 4),
            }
        ]
        for hops in HOPS:

            def pull_delta(attempt: int, hops: int = hops) -> Any:
                target = versions[n + hops]
                return store.pull("bench", target, work / f"delta-{hops}-{attempt}", base=ckpts[n])

            seconds, result = median_time(args.repeat, pull_delta)

            plan = store.plan("bench", versions[n + hops], have=[versions[n]])
            refs = [ref for step in plan.steps for ref in step.delta.objects]

            def fetch_only(attempt: int, hops: int = hops, refs: list = refs) -> int:
                cache = ObjectCache(work / f"fetch-{hops}-{attempt}")
                return download_objects(store.catalog.backend, "bench", refs, cache)

            transfer_s, _ = median_time(args.repeat, fetch_only)
            rows.append(
                {
                    "case": f"delta N->N+{hops}",
                    "hops": hops,
                    "bytes": result.downloaded_bytes,
                    "seconds": seconds,
                    "transfer_seconds": round(transfer_s, 4),
                    "path": len(result.path) - 1,
                }
            )

        # One direct delta N -> N+5 (squash) instead of the chain of five.
        squashed = store.squash("bench", versions[n], versions[n + max(HOPS)])

        def pull_squashed(attempt: int) -> Any:
            target = versions[n + max(HOPS)]
            return store.pull("bench", target, work / f"squashed-{attempt}", base=ckpts[n])

        seconds, result = median_time(args.repeat, pull_squashed)
        rows.append(
            {
                "case": f"delta N->N+{max(HOPS)} squashed",
                "hops": max(HOPS),
                "bytes": result.downloaded_bytes,
                "seconds": seconds,
                "path": len(result.path) - 1,
                "chain_bytes_before_squash": squashed.previous_chain_bytes,
            }
        )

        def pull_anchor(attempt: int) -> Any:
            return store.pull("bench", versions[n + max(HOPS)], work / f"anchor-{attempt}")

        seconds, result = median_time(args.repeat, pull_anchor)
        rows.append(
            {
                "case": "from nothing (anchor+deltas)",
                "hops": None,
                "bytes": result.downloaded_bytes,
                "seconds": seconds,
                "path": len(result.path),
            }
        )
        for row in rows:
            row["bytes_vs_full"] = round(row["bytes"] / full_downloaded, 4)
            row["time_vs_full"] = round(row["seconds"] / full_s, 3)
            row["seconds"] = round(row["seconds"], 4)

        report = {
            "benchmark": "store",
            "backend": "s3 (moto ThreadedMotoServer, 127.0.0.1)",
            "model": {
                "hidden": args.hidden,
                "layers": args.layers,
                "lr": args.lr,
                "checkpoint_bytes": full_bytes,
                "versions": len(ckpts),
            },
            "train_seconds": round(train_s, 2),
            "push_seconds_all_versions": round(push_s, 2),
            "repeat": args.repeat,
            "rows": rows,
        }
        header = f"{'case':<30} {'bytes':>12} {'x full':>8} {'transfer s':>11} {'total s':>9}"
        print(header, file=sys.stderr)
        for row in rows:
            transfer = row.get("transfer_seconds")
            print(
                f"{row['case']:<30} {row['bytes']:>12} {row['bytes_vs_full']:>8.4f} "
                f"{'' if transfer is None else f'{transfer:.3f}':>11} {row['seconds']:>9.3f}",
                file=sys.stderr,
            )
        text = json.dumps(report, sort_keys=True)
        print(text)
        if args.json_out:
            args.json_out.write_text(text + "\n")
    finally:
        cleanup.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
