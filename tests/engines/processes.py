"""Starting and stopping the reference engine and the engine proxy as real subprocesses, as a pod
would run them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deltaroll.engines import engine_client
from deltaroll.engines.reference.loading import load_model
from deltaroll.engines.reference.server import ReferenceEngine, make_admin_server, make_server
from engines.checkpoints import EVAL_TEXTS, PROMPT
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


#: (version, eval loss) and (version, greedy completion) of one pair of requests.
Answer = tuple[tuple[str, float], tuple[str, str]]


class InProcessEngine:
    """The reference engine on its two loopback ports, in this process (so a test can break
    a write inside it)."""

    def __init__(self, path: Path) -> None:
        self.engine = ReferenceEngine(load_model(path), device="cpu")
        self.servers = [make_server(self.engine, "127.0.0.1", 0), make_admin_server(self.engine, 0)]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url, self.admin = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)
        self.client = engine_client("reference", self.admin)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def answer(self) -> Answer:
        """(version, eval loss) and (version, greedy completion): two requests, each answered
        by one version (a change may fall between them)."""
        status, evaluation = call("POST", self.url + "/eval", {"texts": EVAL_TEXTS})
        assert status == 200, evaluation
        status, completion = call(
            "POST", self.url + "/v1/completions", {"prompt": PROMPT, "max_tokens": 6}
        )
        assert status == 200, completion
        return (
            (evaluation["version"], evaluation["loss"]),
            (completion["system_fingerprint"], completion["choices"][0]["text"]),
        )


@contextmanager
def serving_copy(source: Path, where: Path) -> Iterator[InProcessEngine]:
    """An :class:`InProcessEngine` serving a copy of ``source`` at ``where``."""
    shutil.copytree(source, where)
    engine = InProcessEngine(where)
    try:
        yield engine
    finally:
        engine.close()
