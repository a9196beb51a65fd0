"""One local control plane: the API server on HTTPS, the kubelet and the controllers.

``async with Sandbox(directory) as sb:`` starts everything in the running event loop (tens of
milliseconds, TLS keys included), writes ``sb.kubeconfig_path`` and stops everything on exit,
killing every process the kubelet started (and their children). For synchronous code and pytest, see
:mod:`deltaroll_sandbox.testing`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType

import structlog

from deltaroll_sandbox import certs, kubeconfig
from deltaroll_sandbox.apiserver.server import RunningServer, SandboxApiServer, serve
from deltaroll_sandbox.controllers.daemonsets import DaemonSetController
from deltaroll_sandbox.controllers.deployments import DeploymentController
from deltaroll_sandbox.controllers.jobs import JobController
from deltaroll_sandbox.controllers.scheduler import Scheduler
from deltaroll_sandbox.errors import SandboxStartError
from deltaroll_sandbox.kubelet import node
from deltaroll_sandbox.kubelet.kubelet import Kubelet
from deltaroll_sandbox.kubelet.logs import PodLogs
from deltaroll_sandbox.kubelet.processes import ProcessTable

log = structlog.get_logger("deltaroll_sandbox")


class Sandbox:
    """A Kubernetes API plus ``nodes`` kubelets that run pods as local processes, in one folder
    (see :mod:`deltaroll_sandbox.kubelet.node` for what a node is here)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        run_pods: bool = True,
        history_limit: int = 20000,
        nodes: int = 1,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.nodes = node.sandbox_nodes(nodes, self.directory)
        self.host = host
        self.requested_port = port
        self.run_pods = run_pods
        self.api = SandboxApiServer(history_limit=history_limit)
        self._server: RunningServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.kubelets: list[Kubelet] = []
        self.processes = ProcessTable()  # the machine's: every node's pods run on it

    @property
    def kubeconfig_path(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def api_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running: enter it with `async with` first")
        return f"https://{self.host}:{self._server.port}"

    async def __aenter__(self) -> Sandbox:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tls = certs.generate(self.directory / "pki")
        except OSError as exc:
            raise SandboxStartError(
                f"cannot write to {self.directory}: {exc}; pick another --dir"
            ) from exc
        await self.api.__aenter__()
        try:
            self._server = await serve(
                self.api, self.host, self.requested_port, tls.server_context()
            )
        except OSError as exc:
            await self.api.__aexit__(None, None, None)
            raise SandboxStartError(
                f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror}; "
                "pick another --port (0 picks a free one)"
            ) from exc
        kubeconfig.write(self.kubeconfig_path, self.api_url, tls.ca_cert)
        if self.run_pods:
            self.kubelets = [
                Kubelet(
                    self.api.store,
                    each,
                    self.directory,
                    self.api_url,
                    self.api.tokens,
                    tls.ca_cert.read_text(),
                    self.processes,
                )
                for each in self.nodes
            ]
            for each in self.nodes:  # before any pod: the first is scheduled at once
                node.register(self.api.store, each)
            self.api.pod_logs = PodLogs(self.api.store, self.directory, self.kubelets)
            controllers: list[
                Kubelet | Scheduler | JobController | DeploymentController | DaemonSetController
            ] = [
                *self.kubelets,
                Scheduler(self.api.store),
                JobController(self.api.store),
                DeploymentController(self.api.store),
                DaemonSetController(self.api.store),
            ]
            for controller in controllers:
                self._tasks.append(
                    asyncio.create_task(controller.run(), name=type(controller).__name__)
                )
        log.info("sandbox.started", url=self.api_url, kubeconfig=str(self.kubeconfig_path))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(*(kubelet.shutdown() for kubelet in self.kubelets))
        await self.processes.stop_all(grace_s=1.0)
        if self._server is not None:
            await self._server.close()
            self._server = None
        await self.api.__aexit__(exc_type, exc, tb)
        log.info("sandbox.stopped")
