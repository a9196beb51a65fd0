"""Can a warm in-place apply come within 1.5x of the bare write? Today's apply against a fused pass.

Issue 13's target (warm apply <= 1.5x the bare write) is not met by today's design, which checks
every changed element (gather, resolve, hash) before it writes the first one. This benchmark
times, in one process on the same page-cached checkpoint (scale.py's chain generator, bf16
one-tensor 1 GB files), median of ``--rounds``, wall and CPU seconds (every thread):

- ``bare``: scale.py's floor, the new values written at the positions through a mapping;
- ``today``: ``apply_delta(..., in_place=True, durable=False)``, what ``apply --in-place`` runs
  (its ``make_durable`` afterwards is timed apart as ``today_durable``);
- ``today_passes``: only its two passes per tensor (check: ``checked_changes``; write:
  ``scatter``), no manifest, journal or redo log;
- ``fused``: a prototype of the fused design, one compiled pass per window that decodes the
  positions, reads the base value, resolves the target, keeps the old value in an undo file
  mapped from the page cache (no fsync), writes the target, and hashes (positions, base,
  target) into ``changes_digest`` chunk by chunk; with the manifest read, object check,
  trusted-state check and state record of a real apply around it. The codec stores the changes
  grouped by the base value's context, so resolving an element needs where its context's group
  starts, which depends on every base value: ``fused`` takes those 257 counts as given (a
  payload format that carried them; computed untimed here), ``fused_prepass`` counts them in a
  read pass first (today's payload format);
- ``fused_threads``: ``fused`` with the hash of each chunk on a second thread while the kernel
  does the next;
- ``undo``: restoring the old values from the undo file (what a digest mismatch costs);
- ``hash_only`` and ``decode_only``: BLAKE3 of the change sets (8 + 2 + 2 bytes per change) and
  decoding the payloads (zstd), alone: what any design with this digest and payload format adds
  to the bare write on one core.

Between steps the weight files are restored to v1 and fsynced (untimed), so every step starts
from the same clean, cached pages. Prints one JSON object as the last line of stdout.
Run: flock /tmp/bench.lock .venv/bin/python benchmarks/apply_phases.py [--points 1:0.03,4:1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numba
import numpy as np

from deltaroll.codec.kernels import _input
from scale import GB, STEP_WINDOW, make_base, make_step, weight_files

CHUNK = 1 << 20  # positions per kernel call (as the apply's PositionCursor chunks)
ESCAPE = 255
EXCEPTION = 256
# Errors the fused kernel returns (negated); the apply would then undo what it wrote.
LONG_GAPS, OUT_OF_RANGE, GROUP_OVERFLOW, BAD_CHANGE = 1, 2, 3, 4

_SIG_COMMON = (
    _input(numba.uint8),  # short gaps
    _input(numba.uint64),  # long gaps
    numba.int64,  # limit (elements of the tensor)
    numba.int64[::1],  # cursor: next short gap, next long gap, last position
    numba.int64,  # end of the window (elements)
    _input(numba.int64),  # exception ranks
    numba.int64[::1],  # exception cursor
)


@numba.njit(
    numba.int64(
        numba.uint16[::1],  # the mapped window, written
        numba.int64,  # its first element
        *_SIG_COMMON,
        numba.int64[::1],  # per context: where its next change is in sorted_changes
        numba.int64[::1],  # per context: where its group ends
        _input(numba.uint16),  # the payload's changes, grouped by context
        numba.boolean,  # forward
        numba.boolean,  # counting: only count the contexts (group_next), write nothing
        numba.int64[::1],  # out: positions (hashed)
        numba.uint16[::1],  # out: old values (the mapped undo file)
        numba.uint16[::1],  # out: new values (hashed)
    ),
    cache=True,
    nogil=True,
)
def fused_chunk(
    window: np.ndarray,
    first: int,
    short: np.ndarray,
    long: np.ndarray,
    limit: int,
    cursor: np.ndarray,
    end: int,
    ranks: np.ndarray,
    exc: np.ndarray,
    group_next: np.ndarray,
    group_end: np.ndarray,
    sorted_changes: np.ndarray,
    forward: bool,
    counting: bool,
    positions: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Decode, read, resolve, log the old value, write the new one: one pass per chunk of
    positions below ``end``; returns how many, or a negated error (the caller undoes).
    ``counting``: the read pass today's payload format needs first, which only counts the base
    values' contexts (exceptions apart) into ``group_next``."""
    index, next_long, position = cursor[0], cursor[1], cursor[2]
    stop, bound = min(short.shape[0], index + positions.shape[0]), min(end, limit)
    next_exception = ranks[exc[0]] if exc[0] < ranks.shape[0] else short.shape[0]
    one, byte, shift = np.uint64(1), np.uint64(0xFF), np.uint64(7)
    subtract_odd = np.uint64(0) if forward else one
    bad = np.uint64(0)
    count = 0
    for i in range(index, stop):
        gap = np.int64(short[i])
        escaped = short[i] == ESCAPE
        if escaped:
            if next_long == long.shape[0]:
                return -LONG_GAPS
            gap = np.int64(long[next_long])
        candidate = position + gap + 1
        if candidate >= bound:
            if candidate >= limit:
                return -OUT_OF_RANGE
            break
        position = candidate
        next_long += escaped
        known16 = window[position - first]
        known = np.uint64(known16)
        context = (known >> shift) & byte
        listed = i == next_exception
        if listed:
            exc[0] += 1
            next_exception = ranks[exc[0]] if exc[0] < ranks.shape[0] else short.shape[0]
            slot = np.int64(EXCEPTION)
        else:
            slot = np.int64(context)
        if counting:
            group_next[slot] += 1
            count += 1
            continue
        at = group_next[slot]
        if at >= group_end[slot]:
            return -GROUP_OVERFLOW  # more base values in this context than the payload has
        group_next[slot] = at + 1
        zigzag = np.uint64(sorted_changes[at])
        magnitude = (zigzag >> one) + (zigzag & one)
        negate = np.uint64(0) - ((zigzag ^ subtract_odd) & one)
        old[count] = known16  # the undo record, before the write (a mapped page: kill -9 safe)
        window[position - first] = known + ((magnitude ^ negate) - negate)
        target = window[position - first]
        moved = (np.uint64(target) >> shift) & byte != context
        bad |= np.uint64(zigzag == 0) | np.uint64(moved != listed)
        positions[count] = position
        new[count] = target
        count += 1
    cursor[0], cursor[1], cursor[2] = index + count, next_long, position
    return -BAD_CHANGE if bad else count


MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23


# A change per this many pages or more: fault every page of a window in one call. Without it
# the fused pass takes a read fault and then a write fault on each page it changes (measured
# at 4 GB and 1,000,000 changes, ~0.5 per page: 2.0 s of CPU against 0.7 s today).
POPULATE_PAGES_PER_CHANGE = 8


def _dense(span: Any, changes: Any) -> bool:
    pages = span.numel * span.dtype.itemsize // mmap.PAGESIZE
    return bool(changes.count * POPULATE_PAGES_PER_CHANGE >= pages)


# ---------------------------------------------------------------- timing


def _written_bytes() -> int:
    """Bytes this process dirtied so far (``/proc/self/io`` write_bytes: what write-back sends)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


class Timed:
    """Wall and CPU (user + system, every thread) seconds of one call, and bytes it dirtied."""

    def __init__(self, call: Callable[[], Any]) -> None:
        written = _written_bytes()
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        self.result = call()
        self.wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        self.written = _written_bytes() - written


def _fsync_weights(weights: Path) -> None:
    for file, _, _ in weight_files(weights):
        fd = os.open(file, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def _scatter_values(weights: Path, writes: Path, values: list[np.ndarray]) -> None:
    """scale.py's bare write: ``values[i]`` at file i's logged positions, through a mapping."""
    for index, (file, offset, numel) in enumerate(weight_files(weights)):
        positions = np.memmap(writes / f"p{index}.bin", dtype=np.int64, mode="r")
        data = np.memmap(file, dtype=np.uint16, mode="r+", offset=offset, shape=(numel,))
        for first in range(0, positions.shape[0], STEP_WINDOW):
            chunk = slice(first, first + STEP_WINDOW)
            data[positions[chunk]] = values[index][chunk]
        del data


def _logged(writes: Path, count: int) -> list[np.ndarray]:
    return [np.fromfile(writes / f"v{i}.bin", np.uint16) for i in range(count)]


def _gather_values(weights: Path, writes: Path) -> list[np.ndarray]:
    out = []
    for index, (file, offset, numel) in enumerate(weight_files(weights)):
        positions = np.fromfile(writes / f"p{index}.bin", np.int64)
        data = np.memmap(file, dtype=np.uint16, mode="r", offset=offset, shape=(numel,))
        out.append(np.asarray(data[positions]))
        del data
    return out


def _retrust(weights: Path) -> None:
    """Hash the (restored) checkpoint and record it, as a first apply does: untimed."""
    from deltaroll.checkpoint.digests import aux_digests, checkpoint_digests, version_of
    from deltaroll.checkpoint.reader import open_checkpoint
    from deltaroll.checkpoint.state import make_durable, record_state

    checkpoint = open_checkpoint(weights)
    digests, files = checkpoint_digests(checkpoint), aux_digests(checkpoint)
    record_state(checkpoint, version_of(checkpoint, digests, files), digests, files)
    make_durable(weights)


# ---------------------------------------------------------------- the steps


def _hash_only(writes: Path, old: list[np.ndarray], new: list[np.ndarray]) -> None:
    """``changes_digest`` of every change set alone: BLAKE3 of 8 + 2 + 2 bytes per change."""
    from deltaroll.codec import ChangesHasher

    for index, (base, target) in enumerate(zip(old, new, strict=True)):
        positions = np.fromfile(writes / f"p{index}.bin", np.int64)
        hasher = ChangesHasher(2)
        for first in range(0, positions.shape[0], CHUNK):
            chunk = slice(first, first + CHUNK)
            hasher.update(positions[chunk], base[chunk], target[chunk])
        hasher.hexdigest()


def _decode_only(delta: Path) -> None:
    """Every sparse payload decoded and its change stream decompressed (zstd), nothing else."""
    from deltaroll.checkpoint.changeset import sparse_changes
    from deltaroll.checkpoint.manifest import read_delta_manifest
    from deltaroll.checkpoint.objects import ObjectDir
    from deltaroll.checkpoint.packs import PackReader

    manifest = read_delta_manifest(delta)
    payload = PackReader(ObjectDir(delta), manifest.objects)
    for entry in manifest.tensors:
        if entry.payload is not None:
            sparse_changes(entry, np.dtype(np.uint16), payload).sorted_changes  # noqa: B018


def _ranges(values: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """A scatter's value source over one array: (first, count) -> those values."""
    return lambda first, count: values[first : first + count]


def today(weights: Path, delta: Path) -> None:
    from deltaroll.checkpoint import apply_delta

    apply_delta(weights, delta, in_place=True, durable=False)


def today_passes(weights: Path, delta: Path) -> None:
    """Today's check pass and write pass per tensor, nothing around them."""
    from deltaroll.checkpoint.changeset import checked_changes, span_of
    from deltaroll.checkpoint.manifest import read_delta_manifest
    from deltaroll.checkpoint.objects import ObjectDir
    from deltaroll.checkpoint.packs import PackReader
    from deltaroll.checkpoint.reader import open_checkpoint
    from deltaroll.checkpoint.scatter import scatter

    manifest = read_delta_manifest(delta)
    objects = PackReader(ObjectDir(delta), manifest.objects)
    checkpoint = open_checkpoint(weights)
    for entry in manifest.tensors:
        if entry.payload is None:
            continue
        ref = checkpoint.tensors[entry.name]
        change = checked_changes(entry, ref, objects, "base")
        scatter(span_of(ref), change.positions(), _ranges(change.values))


class Fused:
    """The fused prototype over one checkpoint and delta (forward only, bf16 only)."""

    def __init__(self, weights: Path, delta: Path, work: Path) -> None:
        self.weights, self.delta, self.work = weights, delta, work
        self.groups: dict[str, np.ndarray] = {}  # context group ends (the format-change case)

    def learn_groups(self) -> None:
        """What a payload carrying per-context counts would say: computed untimed here from a
        pre-pass (the numbers are the same as the format would store)."""
        self.groups = {}
        self.run(prepass=True, keep_groups=True, write=False)

    def run(
        self,
        *,
        prepass: bool,
        pipelined: bool = False,
        keep_groups: bool = False,
        write: bool = True,
    ) -> None:
        from deltaroll.checkpoint.apply import verify_objects
        from deltaroll.checkpoint.changeset import check_fits, span_of, sparse_changes
        from deltaroll.checkpoint.digests import check_version_ids
        from deltaroll.checkpoint.manifest import read_delta_manifest
        from deltaroll.checkpoint.objects import ObjectDir
        from deltaroll.checkpoint.packs import PackReader
        from deltaroll.checkpoint.reader import open_checkpoint
        from deltaroll.checkpoint.state import record_side, trusted_state
        from deltaroll.codec import ChangesHasher

        manifest = read_delta_manifest(self.delta)
        check_version_ids(manifest)
        objects = ObjectDir(self.delta)
        verify_objects(manifest, objects)
        payload = PackReader(objects, manifest.objects)
        checkpoint = open_checkpoint(self.weights)
        trusted = trusted_state(checkpoint)
        assert trusted is not None and trusted.version == manifest.base_version, "not trusted"
        journal = self.work / "undo"
        journal.mkdir(exist_ok=True)
        # The journal's commit record, through the page cache (no fsync).
        (journal / "state.json").write_text(json.dumps({"delta": manifest.manifest_digest}))
        for entry in manifest.tensors:
            if entry.payload is None:
                continue
            ref = checkpoint.tensors[entry.name]
            check_fits(entry, ref, "base")
            span = span_of(ref)
            changes = sparse_changes(entry, span.dtype, payload)
            if prepass or entry.name not in self.groups:
                ends = self._count(span, changes)
                if keep_groups:
                    self.groups[entry.name] = ends
            else:
                ends = self.groups[entry.name]
            if not write:
                continue
            hasher = ChangesHasher(2)
            self._fused(span, changes, ends, journal / f"{entry.name}.undo", hasher, pipelined)
            if hasher.hexdigest() != entry.changes_digest:
                raise RuntimeError(f"{entry.name}: changes_digest mismatch (would undo)")
        if write:
            record_side(self.weights, manifest, "target", checkpoint)

    def _windows(
        self, span: Any, visit: Callable[[int, int, np.ndarray], None], populate: int = 0
    ) -> None:
        """Map each 64 MiB window of the tensor writable and let ``visit`` index it (a
        callback: no view may outlive its mapping)."""
        per_window = (64 << 20) // 2
        fd = os.open(span.path, os.O_RDWR)
        try:
            for start in range(0, span.numel, per_window):
                count = min(per_window, span.numel - start)
                offset = span.begin + 2 * start
                aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
                with mmap.mmap(fd, offset - aligned + 2 * count, offset=aligned) as mapping:
                    if populate:
                        with contextlib.suppress(OSError):
                            mapping.madvise(populate)
                    window = np.frombuffer(mapping, np.uint16, count, offset - aligned)
                    visit(start, count, window)
                    del window
        finally:
            os.close(fd)

    def _count(self, span: Any, changes: Any) -> np.ndarray:
        counts = np.zeros(EXCEPTION + 1, np.int64)
        cursor, exc = np.array([0, 0, -1], np.int64), np.zeros(1, np.int64)
        short, long = changes.gaps.short, changes.gaps.long

        positions, nothing = np.empty(CHUNK, np.int64), np.empty(0, np.uint16)

        def visit(start: int, count: int, window: np.ndarray) -> None:
            while True:
                got = fused_chunk(
                    window, start, short, long, span.numel, cursor, start + count,
                    changes.exception_ranks, exc, counts, counts, nothing, True, True,
                    positions, nothing, nothing,
                )  # fmt: skip
                if got < 0:
                    raise RuntimeError(f"corrupt positions ({got})")
                if got < CHUNK:
                    break

        self._windows(span, visit, MADV_POPULATE_READ if _dense(span, changes) else 0)
        return np.cumsum(counts)

    def _fused(
        self,
        span: Any,
        changes: Any,
        ends: np.ndarray,
        undo: Path,
        hasher: Any,
        pipelined: bool,
    ) -> None:
        total = changes.count
        fd = os.open(undo, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(2 * total, 1))
            undo_map = mmap.mmap(fd, max(2 * total, 1))
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            undo_map.madvise(MADV_POPULATE_WRITE)
        undo_log = np.frombuffer(undo_map, np.uint16, total)
        group_next = np.concatenate(([0], ends[:-1])).astype(np.int64)
        group_end = np.ascontiguousarray(ends, np.int64)
        cursor, exc = np.array([0, 0, -1], np.int64), np.zeros(1, np.int64)
        # Two sets of buffers when the hash runs on a second thread: the kernel fills one while
        # the other's chunk is hashed (BLAKE3 and the kernel both release the GIL).
        buffers = [(np.empty(CHUNK, np.int64), np.empty(CHUNK, np.uint16)) for _ in range(2)]
        pool = ThreadPoolExecutor(1) if pipelined else None
        pending: list[Future[None]] = []
        sorted_changes = changes.sorted_changes
        short, long, ranks = changes.gaps.short, changes.gaps.long, changes.exception_ranks
        done = turn = 0

        def hash_chunk(positions: np.ndarray, base: np.ndarray, new: np.ndarray) -> None:
            hasher.update_positions(positions)
            hasher.update_values("base", base)
            hasher.update_values("target", new)

        def visit(start: int, count: int, window: np.ndarray) -> None:
            nonlocal done, turn
            while True:
                positions, new = buffers[turn]
                got = fused_chunk(
                    window, start, short, long, span.numel, cursor, start + count, ranks, exc,
                    group_next, group_end, sorted_changes, True, False, positions,
                    undo_log[done : done + CHUNK], new,
                )  # fmt: skip
                if got < 0:
                    raise RuntimeError(f"fused pass refused ({got}): would undo")
                chunk = (positions[:got], undo_log[done : done + got], new[:got])
                if pool is None:
                    hash_chunk(*chunk)
                else:
                    if pending:
                        pending.pop().result()  # the hash that used the other buffers is done
                    pending.append(pool.submit(hash_chunk, *chunk))
                    turn ^= 1
                done += got
                if got < CHUNK:
                    break

        self._windows(span, visit, MADV_POPULATE_WRITE if _dense(span, changes) else 0)
        if pool is not None:
            if pending:
                pending.pop().result()
            pool.shutdown()
        if done != total or not np.array_equal(group_next, group_end):
            raise RuntimeError("the base values' contexts do not match the payload: would undo")
        undo_log = np.empty(0, np.uint16)  # the mapping's last view, released before it closes
        undo_map.close()

    def undo(self) -> None:
        """Write every undo record back (a mismatch's cost); positions from the payload."""
        from deltaroll.checkpoint.changeset import span_of, sparse_changes
        from deltaroll.checkpoint.manifest import read_delta_manifest
        from deltaroll.checkpoint.objects import ObjectDir
        from deltaroll.checkpoint.packs import PackReader
        from deltaroll.checkpoint.reader import open_checkpoint
        from deltaroll.checkpoint.scatter import scatter

        manifest = read_delta_manifest(self.delta)
        payload = PackReader(ObjectDir(self.delta), manifest.objects)
        checkpoint = open_checkpoint(self.weights)
        for entry in manifest.tensors:
            if entry.payload is None:
                continue
            span = span_of(checkpoint.tensors[entry.name])
            changes = sparse_changes(entry, span.dtype, payload)
            old = np.fromfile(self.work / "undo" / f"{entry.name}.undo", np.uint16)
            scatter(span, changes.positions(), _ranges(old))


# ---------------------------------------------------------------- one point


def _summary(samples: list[Timed]) -> dict[str, Any]:
    return {
        "wall_s": statistics.median(t.wall for t in samples),
        "cpu_s": statistics.median(t.cpu for t in samples),
        "written_bytes": statistics.median(t.written for t in samples),
        "wall_samples": [round(t.wall, 4) for t in samples],
        "cpu_samples": [round(t.cpu, 4) for t in samples],
    }


def measure_point(work: Path, size_gb: float, changed: int, rounds: int) -> dict[str, Any]:
    from deltaroll.checkpoint import apply_delta, diff_checkpoints
    from deltaroll.checkpoint.state import make_durable

    point = work / f"{size_gb}GB-{changed}"
    shutil.rmtree(point, ignore_errors=True)
    point.mkdir(parents=True)
    v0, v1, v2, writes = point / "v0", point / "v1", point / "v2", point / "writes"
    make_base(v0, int(size_gb * GB) // 2 * 2, seed=1)
    make_step(v0, v1, changed, seed=2)
    shutil.rmtree(v0)
    actual = make_step(v1, v2, changed, seed=3, writes=writes)
    diff_checkpoints(v1, v2, point / "d12")
    shutil.rmtree(v2)
    weights = v1
    delta = point / "d12"
    # A first apply hashes in full and records the trusted state; the reverse returns to v1.
    apply_delta(weights, delta, in_place=True)
    apply_delta(weights, delta, in_place=True, reverse=True)
    files = len(weight_files(weights))
    new_values, old_values = _logged(writes, files), _gather_values(weights, writes)
    fused = Fused(weights, delta, point)
    fused.learn_groups()

    def restore() -> None:
        _scatter_values(weights, writes, old_values)

    samples: dict[str, list[Timed]] = {
        k: []
        for k in (
            "bare", "today", "today_durable", "today_passes", "fused", "fused_prepass",
            "fused_threads", "undo", "hash_only", "decode_only",
        )
    }  # fmt: skip
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        _fsync_weights(weights)
        samples["today"].append(Timed(lambda: today(weights, delta)))
        samples["today_durable"].append(Timed(lambda: make_durable(weights)))
        apply_delta(weights, delta, in_place=True, reverse=True)
        for name, step in (
            ("bare", lambda: _scatter_values(weights, writes, new_values)),
            ("today_passes", lambda: today_passes(weights, delta)),
            ("fused", lambda: fused.run(prepass=False)),
            ("fused_prepass", lambda: fused.run(prepass=True)),
            ("fused_threads", lambda: fused.run(prepass=False, pipelined=True)),
        ):
            if name.startswith("fused"):
                _retrust(weights)  # the fused pass starts from a trusted state
            _fsync_weights(weights)
            samples[name].append(Timed(step))
            written = _gather_values(weights, writes)  # every step wrote exactly v2's values
            assert all(np.array_equal(a, b) for a, b in zip(written, new_values, strict=True))
            if name == "fused_prepass":
                _fsync_weights(weights)
                samples["undo"].append(Timed(fused.undo))
            else:
                restore()
        # What any design with this digest and payload must add to the write, on one core.
        samples["hash_only"].append(Timed(lambda: _hash_only(writes, old_values, new_values)))
        samples["decode_only"].append(Timed(lambda: _decode_only(delta)))
        _retrust(weights)
        loads.append(os.getloadavg()[0])
    restored = _gather_values(weights, writes)
    assert all(np.array_equal(a, b) for a, b in zip(restored, old_values, strict=True))
    result: dict[str, Any] = {
        "size_gb": size_gb,
        "changed_elements": actual,
        "density": actual / (int(size_gb * GB) // 2),
        "delta_bytes": sum(p.stat().st_size for p in (delta / "objects").iterdir()),
        "rounds": rounds,
        "load_average": loads,
        **{name: _summary(s) for name, s in samples.items()},
    }
    bare = result["bare"]
    for name in (
        "today", "today_passes", "fused", "fused_prepass", "fused_threads", "undo", "hash_only",
        "decode_only",
    ):  # fmt: skip
        result[f"{name}_vs_bare"] = result[name]["wall_s"] / bare["wall_s"]
        result[f"{name}_cpu_vs_bare"] = result[name]["cpu_s"] / bare["cpu_s"]
    shutil.rmtree(point)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--points", default="1:0.03,4:1000000", help="SIZE_GB:CHANGED (a fraction: a density)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="deltaroll-phases-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    import deltaroll.codec.kernels  # noqa: F401  (loaded before any clock, as in the agent)

    points = []
    for spec in args.points.split(","):
        size_text, changed_text = spec.split(":")
        size = float(size_text)
        changed = float(changed_text)
        count = int(changed * size * GB / 2) if changed < 1 else int(changed)
        point = measure_point(work, size, count, args.rounds)
        points.append(point)
        print(
            f"{size} GB, {point['changed_elements']} changes: bare {point['bare']['wall_s']:.3f} s "
            f"({point['bare']['cpu_s']:.3f} CPU); today {point['today']['wall_s']:.3f} "
            f"({point['today_vs_bare']:.2f}x); passes {point['today_passes']['wall_s']:.3f} "
            f"({point['today_passes_vs_bare']:.2f}x); fused {point['fused']['wall_s']:.3f} "
            f"({point['fused_vs_bare']:.2f}x, CPU {point['fused_cpu_vs_bare']:.2f}x); fused with "
            f"pre-pass {point['fused_prepass']['wall_s']:.3f} "
            f"({point['fused_prepass_vs_bare']:.2f}x); fused, hash on a thread "
            f"{point['fused_threads']['wall_s']:.3f} ({point['fused_threads_vs_bare']:.2f}x, "
            f"CPU {point['fused_threads_cpu_vs_bare']:.2f}x)"
            f"; undo {point['undo']['wall_s']:.3f}; load {point['load_average']}",
            file=sys.stderr,
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "apply_phases", "target_vs_bare": 1.5, "points": points}))


if __name__ == "__main__":
    main()
