"""Start a sandbox from synchronous code and tests, in a background thread with its own loop.

    from deltaroll_sandbox.testing import running_sandbox

    with running_sandbox(tmp_path) as sb:        # about a second
        client = sb.api_client()                 # kubernetes.client.ApiClient
        sb.kubectl("get", "pods")                # the real kubectl, with sb's kubeconfig

Or take the ``sandbox`` fixture: in a conftest.py,
``from deltaroll_sandbox.pytest_fixtures import sandbox  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaroll_sandbox.apiserver.server import parse_api_path
from deltaroll_sandbox.errors import SandboxStartError
from deltaroll_sandbox.sandbox import Sandbox

START_TIMEOUT_S = 30.0


def kubectl_binary() -> str:
    """kubectl from PATH, else the repository's ``.tools/bin/kubectl``."""
    found = shutil.which("kubectl")
    if found:
        return found
    for parent in Path(__file__).resolve().parents:
        candidate = parent / ".tools" / "bin" / "kubectl"
        if candidate.exists():
            return str(candidate)
    raise SandboxStartError(
        "kubectl not found: put it on PATH (make setup fetches it to .tools/bin)"
    )


@dataclass
class RunningSandbox:
    """A started sandbox, seen from outside its event loop."""

    sandbox: Sandbox
    loop: asyncio.AbstractEventLoop

    @property
    def directory(self) -> Path:
        return self.sandbox.directory

    @property
    def kubeconfig_path(self) -> Path:
        return self.sandbox.kubeconfig_path

    @property
    def api_url(self) -> str:
        return self.sandbox.api_url

    def env(self) -> dict[str, str]:
        """The current environment with ``KUBECONFIG`` pointing at this sandbox."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig_path)}

    def api_client(self) -> Any:
        """An official-client ``ApiClient`` for this sandbox (close it when done)."""
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig_path))

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig_path), *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=timeout,
        )

    def call(self, fn: Any, *args: Any, timeout: float = 10) -> Any:
        """Run ``fn(*args)`` in the sandbox's loop (e.g. to read its store); return its result.
        ``timeout``: how long to wait for the loop (a loaded one serves its queue first)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=timeout)

    def live_pids(self) -> set[int]:
        return self.call(self.sandbox.processes.live_pids)

    def requests(
        self,
        since: float,
        until: float,
        *,
        ignore_user_agent: str | None = None,
        timeout: float = 10,
    ) -> Counter[str]:
        """The one-off requests the API server answered between ``since`` and ``until``
        (``time.monotonic()``), by verb and resource ("LIST pods", "PATCH pods/status"...), from
        its audit log; watch streams, discovery and the clients of ``ignore_user_agent`` (an
        observer's own polling) are left out."""
        counts: Counter[str] = Counter()
        for record in self.call(lambda: list(self.sandbox.api.audit), timeout=timeout):
            parsed = parse_api_path(record.path)
            ignored = record.watch or record.user_agent == ignore_user_agent
            if not since <= record.at <= until or ignored or parsed is None:
                continue
            verb = "LIST" if record.method == "GET" and parsed.name is None else record.method
            counts[f"{verb} {'/'.join(filter(None, (parsed.plural, parsed.subresource)))}"] += 1
        return counts


@contextmanager
def running_sandbox(
    directory: Path | str,
    *,
    port: int = 0,
    run_pods: bool = True,
    history_limit: int = 20000,
    nodes: int = 1,
) -> Iterator[RunningSandbox]:
    """A sandbox in a background thread; stopped (every pod process killed) on exit."""
    sandbox = Sandbox(
        directory, port=port, run_pods=run_pods, history_limit=history_limit, nodes=nodes
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with sandbox:
                started.set()
                await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(
        target=loop.run_until_complete, args=(main(),), name="deltaroll-sandbox", daemon=True
    )
    thread.start()
    if not started.wait(START_TIMEOUT_S) or failure:
        raise failure[0] if failure else SandboxStartError("the sandbox did not start in time")
    try:
        yield RunningSandbox(sandbox, loop)
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        if failure:
            raise failure[0]
