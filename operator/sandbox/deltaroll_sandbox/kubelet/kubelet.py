"""The sandbox's kubelet: one per node; runs each pod bound to its node with a :class:`PodWorker`
(:mod:`.logs` serves their logs)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from deltaroll_sandbox.apiserver.store import PODS, Store, WatchEvent
from deltaroll_sandbox.apiserver.tokens import TokenIssuer
from deltaroll_sandbox.controllers import informers
from deltaroll_sandbox.kubelet import node
from deltaroll_sandbox.kubelet.environment import base_environment
from deltaroll_sandbox.kubelet.node import SandboxNode
from deltaroll_sandbox.kubelet.pod import MAX_GRACE_S, PodWorker
from deltaroll_sandbox.kubelet.processes import ProcessTable

log = structlog.get_logger("deltaroll_sandbox.kubelet")
ROOT_CA = "kube-root-ca.crt"


class Kubelet:
    """Runs the pods bound to its node as local processes (in the sandbox's process table)."""

    def __init__(
        self,
        store: Store,
        node: SandboxNode,
        sandbox_dir: Path,
        api_url: str,
        tokens: TokenIssuer,
        ca_pem: str,
        processes: ProcessTable,
    ) -> None:
        self.store = store
        self.node = node
        self.sandbox_dir = sandbox_dir
        self.pods = informers.resource(store, "", "v1", "pods")
        self._kinds = {
            "configMap": informers.resource(store, "", "v1", "configmaps"),
            "secret": informers.resource(store, "", "v1", "secrets"),
        }
        self.base_env = base_environment(sandbox_dir, api_url)
        self.tokens = tokens
        self.ca_pem = ca_pem
        self.processes = processes
        self.workers: dict[str, PodWorker] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.store.find(self._kinds[kind], namespace, name)
        if found is None and (kind, name) == ("configMap", ROOT_CA):
            # what kube-controller-manager publishes in every namespace; the sandbox has no
            # such controller (its objects would show in every list), so the kubelet knows it
            return {"metadata": {"name": ROOT_CA}, "data": {"ca.crt": self.ca_pem}}
        return found

    async def run(self) -> None:
        node.register(self.store, self.node)
        async for event in informers.events(self.store, {PODS}):
            informers.guarded(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        pod = event.obj
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is None and pod["spec"].get("nodeName") != self.node.name:
            return  # another node's pod, or one the scheduler has not placed yet
        if event.type == "DELETED":
            if worker is not None:
                del self.workers[uid]
                self._in_background(worker.stop())
        elif pod["metadata"].get("deletionTimestamp"):
            # Graceful deletion: stop the containers, then remove the pod for good.
            self.workers.pop(uid, None)
            self._in_background(self._terminate(pod, worker))
        elif worker is not None:
            worker.on_update(pod)
        elif (pod.get("status") or {}).get("phase") in (
            None,
            "Pending",
        ):
            worker = PodWorker(
                self.store,
                self.pods,
                pod,
                self.node,
                self.sandbox_dir,
                self.base_env,
                self.processes,
                self.lookup,
                self.tokens,
            )
            self.workers[uid] = worker
            worker.start()

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _terminate(self, pod: dict[str, Any], worker: PodWorker | None) -> None:
        meta = pod["metadata"]
        if worker is not None:
            await worker.stop(min(float(meta.get("deletionGracePeriodSeconds", 30)), MAX_GRACE_S))
        current = self.store.find(self.pods, meta["namespace"], meta["name"])
        if current is not None and current["metadata"]["uid"] == meta["uid"]:
            self.store.delete(self.pods, meta["namespace"], meta["name"], grace_period_s=0)

    async def shutdown(self) -> None:
        """Stop every pod of the node (the sandbox then stops every process left)."""
        workers = list(self.workers.values())
        self.workers.clear()
        await asyncio.gather(*(w.stop(grace_s=1.0) for w in workers), *self._stopping)
