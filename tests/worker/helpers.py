"""Helpers of the worker tests: running ``deltaroll worker`` for real and reading its report."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DELTAROLL = Path(sys.executable).parent / "deltaroll"
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


def deltaroll_json(*args: object) -> dict[str, Any]:
    """Run a reporting ``deltaroll`` command with --json and parse its one object."""
    done = subprocess.run(
        [str(DELTAROLL), *map(str, args), "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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


@contextmanager
def moto_server() -> Iterator[str]:
    """A real S3 endpoint (moto's server) on 127.0.0.1, for the duration of the block."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
