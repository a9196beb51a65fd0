"""Starting and stopping the reference engine and the engine proxy as real subprocesses, as a pod
would run them."""

from __future__ import annotations

import os
import signal
import socket
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


@dataclass
class RunningProxy:
    url: str  # the pod's inference port
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start_proxy(
    kind: str, upstream: str, log: Path, *extra: str, timeout: float = 60
) -> RunningProxy:
    """``deltaroll engine proxy --allow KIND`` on a free loopback port, once it listens."""
    port = free_port()
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [DELTAROLL, "engine", "proxy", "--allow", kind, "--listen", f"127.0.0.1:{port}",
             "--upstream", upstream, *extra],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited with {process.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return RunningProxy(f"http://127.0.0.1:{port}", process, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"proxy did not listen in {timeout}s: {log.read_text()}")
