"""Measure what planning one version change reads from the store as the model's history grows.

Every pod plans each version change it makes. Planning on the model's whole graph lists every
version and anchor record (a long-lived reader reads each record once, but lists them all every
time), so the bytes a pod reads to move one version grew with the history; a pod that holds the
wanted version's parent now reads that version's record alone (``plan_pull``'s step to a
neighbour). In the same run, at each history length: the graph planner as main used it
(``resolve``, then the whole graph), and ``Store.plan``, each by a warm reader (a long-lived
agent that planned the step before) and by a fresh one (an agent restarted on weights it
holds). Bytes are what moto's S3 sent through a counting proxy on loopback (headers included),
requests what the backend was asked.

A tiny language model is trained with real AdamW steps (the test fixture), every step pushed
as a delta. Prints a table on stderr and one JSON object as the last line of stdout.
Run: .venv/bin/python benchmarks/plan_reads.py [--histories 10,100,300] [--pods 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from deltaroll.store import Store  # noqa: E402
from deltaroll.store.backends import ObjectInfo  # noqa: E402
from deltaroll.store.graph import Plan  # noqa: E402
from deltaroll.store.pull import load_graph  # noqa: E402
from fixtures.checkpoints import train_checkpoints  # noqa: E402
from fleet import ProxyLink  # noqa: E402

MODEL = "bench"
BUCKET = "plan-reads"
UNSHAPED_MBPS = 100_000  # the proxy only counts


def graph_plan(store: Store, version: str, have: list[str]) -> Plan:
    """How main planned every pull: resolve the id (its record), then the whole graph."""
    resolved = store.resolve(MODEL, version)
    plan = load_graph(store.catalog, MODEL).plan(resolved, have)
    assert plan is not None
    return plan


def neighbour_plan(store: Store, version: str, have: list[str]) -> Plan:
    return store.plan(MODEL, version, have)


class Requests:
    """The backend calls a store makes, counted by kind."""

    def __init__(self, store: Store) -> None:
        self.counts: Counter[str] = Counter()
        backend = store.catalog.backend
        read, list_keys = backend.read, backend.list

        def counted_read(key: str) -> bytes:
            self.counts["GET"] += 1
            return read(key)

        def counted_list(prefix: str) -> Iterator[ObjectInfo]:
            self.counts["LIST"] += 1
            return list_keys(prefix)

        backend.read = counted_read  # type: ignore[method-assign]
        backend.list = counted_list  # type: ignore[method-assign]


def measure(
    link: ProxyLink, store: Store, plan: Callable[[Store, str, list[str]], Plan], step: tuple
) -> dict[str, Any]:
    requests = Requests(store)
    before, started = link.bytes_sent(), time.perf_counter()
    result = plan(store, step[1], [step[0]])
    seconds = time.perf_counter() - started
    assert result.path == [step[0], step[1]], result.path
    return {
        "bytes": link.bytes_sent() - before,
        "requests": dict(requests.counts),
        "seconds": round(seconds, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", default="10,100,300", help="versions in the store")
    parser.add_argument("--pods", type=int, default=64, help="fleet size for the per-fleet sums")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    histories = sorted({int(h) for h in args.histories.split(",")})
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    work = Path(tempfile.mkdtemp(prefix="deltaroll-bench-plan-reads-"))
    link = ProxyLink(UNSHAPED_MBPS)
    try:
        os.environ.update(
            AWS_ENDPOINT_URL=link.endpoint,
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="benchmark",
            AWS_SECRET_ACCESS_KEY="benchmark",
            AWS_ALLOW_HTTP="true",
        )
        boto3.client("s3", endpoint_url=link.endpoint).create_bucket(Bucket=BUCKET)
        uri = f"s3://{BUCKET}/models"
        ckpts = train_checkpoints(
            work / "ckpts", steps=max(histories), hidden=64, layers=1, lr=2e-6
        )
        publisher = Store(uri, cache_dir=work / "publisher-cache")
        warm = {"graph": Store(uri, cache_dir=work / "warm-graph"),
                "neighbour": Store(uri, cache_dir=work / "warm-neighbour")}  # fmt: skip
        plans = {"graph": graph_plan, "neighbour": neighbour_plan}
        versions = [publisher.push(MODEL, ckpts[0], anchor=True).version]
        rows: list[dict[str, Any]] = []

        def publish_up_to(count: int) -> None:
            while len(versions) < count:
                index = len(versions)
                versions.append(publisher.push(MODEL, ckpts[index], base=ckpts[index - 1]).version)

        for history in histories:
            publish_up_to(history)
            for name, plan in plans.items():  # the readers' last change, before v(history)
                plan(warm[name], versions[history - 1], [versions[history - 2]])
            publish_up_to(history + 1)
            step = (versions[history - 1], versions[history])
            row: dict[str, Any] = {"history": history}
            for name, plan in plans.items():
                row[f"{name}_warm"] = measure(link, warm[name], plan, step)
                fresh = Store(uri, cache_dir=work / f"fresh-{name}-{history}")
                row[f"{name}_fresh"] = measure(link, fresh, plan, step)
            rows.append(row)
            print(
                f"history {history:>4}: bytes per pod, warm graph "
                f"{row['graph_warm']['bytes']:>8} / neighbour {row['neighbour_warm']['bytes']:>6}; "
                f"fresh graph {row['graph_fresh']['bytes']:>8} / neighbour "
                f"{row['neighbour_fresh']['bytes']:>6}",
                file=sys.stderr,
            )
        delta_bytes = sum(ref.size for ref in publisher.plan(MODEL, versions[-1], [versions[-2]])
                          .steps[0].delta.objects)  # fmt: skip
        result = {
            "benchmark": "plan_reads",
            "model_bytes": sum(f.stat().st_size for f in ckpts[0].iterdir()),
            "delta_bytes": delta_bytes,
            "pods": args.pods,
            "rows": rows,
            "ratios": {
                f"graph_over_neighbour_warm_bytes_at_{row['history']}": round(
                    row["graph_warm"]["bytes"] / row["neighbour_warm"]["bytes"], 2
                )
                for row in rows
            },
            "fleet_bytes_per_version": {
                str(row["history"]): {
                    "graph": row["graph_warm"]["bytes"] * args.pods,
                    "neighbour": row["neighbour_warm"]["bytes"] * args.pods,
                }
                for row in rows
            },
        }
    finally:
        link.close()
        shutil.rmtree(work, ignore_errors=True)
    line = json.dumps(result, sort_keys=True)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
