"""Measure what makes the object cache safe to share, against what it costs without it.

In one run, on one cache directory of N objects (random bytes, so nothing compresses):

- warm check: ``verified`` on objects this process already hashed, against ``has`` (a stat,
  all that main did before trusting a cached file);
- cold check: ``verified`` on objects this process never hashed, against reading and hashing
  the same bytes with hashlib (the least a check can cost);
- commit: verify, fsync, rename, fsync the directory, against verify and rename alone;
- lease: ``hold`` + ``release`` of N digests and a ``prune`` that keeps them, per call;
- scope: the first ``Store.cache`` of a store (the salted scrypt), per store.

Prints a table on stderr and one JSON object as the last line of stdout.
Run: .venv/bin/python benchmarks/cache.py [--objects 32] [--mib 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from deltaroll.store import Store
from deltaroll.store import cache as cache_module
from deltaroll.store.cache import ObjectCache


def median_seconds(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fill(cache: ObjectCache, blobs: list[bytes]) -> list[str]:
    digests = []
    for blob in blobs:
        digest = hashlib.sha256(blob).hexdigest()
        staged = cache.staging_path(digest)
        staged.write_bytes(blob)
        cache.commit(digest, staged)
        digests.append(digest)
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=32)
    parser.add_argument("--mib", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    work = Path(tempfile.mkdtemp(prefix="deltaroll-cache-bench-"))
    try:
        blobs = [os.urandom(args.mib << 20) for _ in range(args.objects)]
        cache = ObjectCache(work / "cache")
        digests = fill(cache, blobs)
        paths = [cache.path(d) for d in digests]

        def forget() -> None:
            cache_module._VERIFIED = cache_module._VerifiedFiles()

        def cold() -> None:
            forget()
            assert all(cache.verified(d) for d in digests)

        def hashlib_only() -> None:
            for path in paths:
                hashlib.sha256(path.read_bytes()).hexdigest()

        def commit(durable: bool) -> Callable[[], None]:
            def run() -> None:
                for digest, blob in zip(digests, blobs, strict=True):
                    staged = cache.staging_path(digest)
                    staged.write_bytes(blob)
                    if durable:
                        cache.commit(digest, staged)
                    else:  # what main did: verify, rename
                        assert cache_module.file_sha256(staged) == digest
                        os.replace(staged, cache.path(digest))

            return run

        def lease() -> None:
            cache.hold(digests)
            cache.prune()
            cache.release(digests)

        scopes = iter(range(1 << 30))
        rows = {
            "stat_only_s": median_seconds(args.repeat, lambda: [cache.has(d) for d in digests]),
            "warm_check_s": median_seconds(
                args.repeat, lambda: [cache.verified(d) for d in digests]
            ),
            "hashlib_s": median_seconds(args.repeat, hashlib_only),
            "cold_check_s": median_seconds(args.repeat, cold),
            "commit_no_fsync_s": median_seconds(args.repeat, commit(durable=False)),
            "commit_fsync_s": median_seconds(args.repeat, commit(durable=True)),
            "lease_hold_prune_release_s": median_seconds(args.repeat, lease),
            "scope_first_use_s": median_seconds(
                args.repeat,
                lambda: Store(f"file://{work}/store-{next(scopes)}", cache_dir=work / "s").cache,
            ),
        }
        ratios = {
            "warm_check_vs_stat": rows["warm_check_s"] / rows["stat_only_s"],
            "cold_check_vs_hashlib": rows["cold_check_s"] / rows["hashlib_s"],
            "commit_fsync_vs_no_fsync": rows["commit_fsync_s"] / rows["commit_no_fsync_s"],
        }
        report = {
            "objects": args.objects,
            "object_bytes": args.mib << 20,
            "repeat": args.repeat,
            "seconds": {k: round(v, 6) for k, v in rows.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
        }
        for name, value in {**rows, **ratios}.items():
            print(f"{name:<28} {value:>12.6f}", file=sys.stderr)
        print(json.dumps(report, sort_keys=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
