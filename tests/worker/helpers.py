"""Helpers of the worker tests: running ``deltaroll worker`` for real and reading its report."""

from __future__ import annotations

import filecmp
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.files import visible_names

SECRET_SENTINEL = "worker-test-secret-key-sentinel-0123456789"


@dataclass
class WorkerRun:
    """One finished ``deltaroll`` process and the report it left for the controller."""

    process: subprocess.CompletedProcess[str]
    report: dict[str, Any] | None

    @property
    def code(self) -> int:
        return self.process.returncode


Worker = Callable[..., WorkerRun]


def compute_args(
    store_uri: str, target: str, *, name: str, parent: str | None = None
) -> tuple[str, ...]:
    """The arguments of ``deltaroll worker compute`` for model ``tiny`` (no parent: an anchor);
    callers append any further options."""
    parent_args = ("--parent", parent) if parent is not None else ()
    return (
        "compute",
        "--store",
        store_uri,
        "--model",
        "tiny",
        *parent_args,
        "--target",
        target,
        "--name",
        name,
    )


def same_files(left: Path, right: Path) -> bool:
    """Whether two directories hold the same file names with byte-identical contents."""
    names = visible_names(left)
    if names != visible_names(right):
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
    return not mismatch and not errors


def refuse_new_objects(store_dir: Path, base: Path, target: Path, scratch: Path) -> list[str]:
    """Make the file:// store unable to write the objects of the delta base -> target.

    The delta is deterministic, so its object names are known in advance; a directory in each
    object's place makes the store's write fail (as a full disk or a read-only bucket would),
    while everything already published stays readable. Returns the blocked digests."""
    from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest

    delta = scratch / "expected-delta"
    diff_checkpoints(base, target, delta)
    objects = store_dir / "tiny" / "objects"
    blocked = [
        ref.digest
        for ref in read_delta_manifest(delta).objects
        if not (objects / ref.digest).exists()
    ]
    for digest in blocked:
        (objects / digest).mkdir(parents=True)
    return blocked
