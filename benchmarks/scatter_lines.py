"""What a CPU scatter of the same number of changes costs in a small and a large model.

Issue 18 asks the in-memory pause to be within 1.3x between two model sizes at the same number
of changed elements; ``pause.py`` measures 4.5-4.9x on this machine's CPU. This benchmark isolates
the write the pause holds: numpy's assignment of ``--changed`` bf16 values (as raw 16-bit bits)
at sorted, uniformly drawn positions into one flat array of each size, one thread, median of
``--rounds``, with a buffer larger than the caches rewritten between rounds (so that neither
array starts cached). Per size it also times the same write right after reading the target
positions (``touched``: every line it will write is in the caches), and counts the distinct
64-byte lines the positions fall in. If the cost followed cache misses to memory, ``touched``
would close the gap; if it follows the lines written, the time ratio tracks the line ratio.

Run: flock /tmp/bench.lock .venv/bin/python benchmarks/scatter_lines.py [--rounds 9]
Prints a table on stderr and one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

#: The demo model's and pause.py's large model's parameter counts.
SIZES = {"demo": 2_492_672, "large": 34_351_616}
LINE_BYTES = 64
EVICT_BYTES = 512 << 20  # beyond the 300 MiB L3 this machine reports


def scatter_seconds(size: int, changed: int, rounds: int, touched: bool, seed: int) -> float:
    rng = np.random.default_rng(seed)
    weights = np.ones(size, dtype=np.uint16)
    positions = np.sort(rng.choice(size, changed, replace=False))
    values = rng.integers(0, 1 << 16, changed, dtype=np.uint16)
    evict = np.zeros(EVICT_BYTES, dtype=np.uint8)
    times = []
    for _ in range(rounds):
        evict += 1
        if touched:
            int(weights[positions].sum())
        started = time.perf_counter()
        weights[positions] = values
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def lines_touched(size: int, changed: int, seed: int) -> int:
    positions = np.random.default_rng(seed).choice(size, changed, replace=False)
    return int(np.unique(positions * 2 // LINE_BYTES).size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changed", type=int, default=375_081, help="the demo delta's count")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rows = []
    for seed, (name, size) in enumerate(SIZES.items()):
        row = {
            "name": name,
            "parameters": size,
            "changed": args.changed,
            "lines": lines_touched(size, args.changed, seed),
            "cold_s": scatter_seconds(size, args.changed, args.rounds, False, seed),
            "touched_s": scatter_seconds(size, args.changed, args.rounds, True, seed),
        }
        rows.append(row)
        print(
            f"{name:>6} {size:>11,} params  {row['lines']:>9,} lines  "
            f"scatter {row['cold_s'] * 1e3:6.2f} ms  after a read {row['touched_s'] * 1e3:6.2f} ms",
            file=sys.stderr,
        )
    small, large = rows
    result = {
        "benchmark": "scatter_lines",
        "sizes": rows,
        "lines_large_vs_demo": large["lines"] / small["lines"],
        "scatter_large_vs_demo": large["cold_s"] / small["cold_s"],
        "touched_large_vs_demo": large["touched_s"] / small["touched_s"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
