"""Starting and stopping the reference engine as a real subprocess, as a pod would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from engines.http_util import call
from fixtures.cli import DELTAROLL
from fixtures.ports import free_port


@dataclass
class RunningEngine:
    url: str  # the inference port
    admin_url: str  # reload and checksums, on loopback
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM, as the kubelet sends; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_reference_engine(model_path: Path, log: Path, *, timeout: float = 120) -> RunningEngine:
    """``deltaroll engine serve --kind reference`` on free loopback ports, once healthy."""
    port, admin_port = free_port(), free_port()
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [DELTAROLL, "engine", "serve", "--kind", "reference",
             "--model-path", str(model_path), "--port", str(port),
             "--admin-port", str(admin_port)],
            stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    engine = RunningEngine(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, log
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engine exited with {process.returncode}: {log.read_text()}")
        try:
            if call("GET", engine.url + "/health", timeout=2)[0] == 200:
                return engine
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"engine did not become healthy in {timeout}s: {log.read_text()}")
