"""The sandbox's kubelet: watches pods in the store and runs each with a :class:`PodWorker`.

Also serves ``pods/<name>/log`` for the API server (``kubectl logs``, ``deltaroll sandbox
logs``) from the log files the workers write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import structlog

from deltaroll_sandbox.apiserver.statuses import bad_request
from deltaroll_sandbox.apiserver.store import PODS, Store, WatchEvent
from deltaroll_sandbox.apiserver.tokens import TokenIssuer
from deltaroll_sandbox.controllers import informers
from deltaroll_sandbox.kubelet import node
from deltaroll_sandbox.kubelet.environment import base_environment
from deltaroll_sandbox.kubelet.pod import MAX_GRACE_S, PodWorker, log_path, pod_dir
from deltaroll_sandbox.kubelet.processes import ProcessTable

log = structlog.get_logger("deltaroll_sandbox.kubelet")
FOLLOW_POLL_S = 0.2
ROOT_CA = "kube-root-ca.crt"


class Kubelet:
    """Runs every pod of the store as local processes."""

    def __init__(
        self, store: Store, sandbox_dir: Path, api_url: str, tokens: TokenIssuer, ca_pem: str
    ) -> None:
        self.store = store
        self.sandbox_dir = sandbox_dir
        self.pods = informers.resource(store, "", "v1", "pods")
        self._kinds = {
            "configMap": informers.resource(store, "", "v1", "configmaps"),
            "secret": informers.resource(store, "", "v1", "secrets"),
        }
        self.base_env = base_environment(sandbox_dir, api_url)
        self.tokens = tokens
        self.ca_pem = ca_pem
        self.processes = ProcessTable()
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
        node.register(self.store)
        async for event in informers.events(self.store, {PODS}):
            informers.guarded(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        pod = event.obj
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
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
        elif event.type == "ADDED" and (pod.get("status") or {}).get("phase") in (
            None,
            "Pending",
        ):
            worker = PodWorker(
                self.store,
                self.pods,
                pod,
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
        """Stop every pod and every process; nothing the kubelet started outlives this."""
        workers = list(self.workers.values())
        self.workers.clear()
        await asyncio.gather(*(w.stop(grace_s=1.0) for w in workers), *self._stopping)
        await self.processes.stop_all(grace_s=1.0)

    async def stream(
        self,
        namespace: str,
        name: str,
        container: str | None,
        previous: bool,
        tail_lines: int | None,
        follow: bool,
    ) -> AsyncIterator[bytes]:
        pod = self.store.get(self.pods, namespace, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        names += [c["name"] for c in pod["spec"].get("initContainers") or []]
        if container is None:
            if len(pod["spec"]["containers"]) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: {names}"
                )
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        statuses = (pod.get("status") or {}).get("containerStatuses", []) + (
            (pod.get("status") or {}).get("initContainerStatuses", [])
        )
        restarts = next((s["restartCount"] for s in statuses if s["name"] == container), 0)
        if previous and restarts == 0:
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        path = log_path(
            pod_dir(self.sandbox_dir, pod), container, restarts - 1 if previous else restarts
        )
        if not path.exists():
            if follow:
                while not path.exists() and self.workers.get(pod["metadata"]["uid"]) is not None:
                    await asyncio.sleep(FOLLOW_POLL_S)
            if not path.exists():
                yield b""
                return
        data = path.read_bytes()
        offset = len(data)  # not the file's size now: it may have grown since the read
        if tail_lines is not None:
            data = b"".join(data.splitlines(keepends=True)[-tail_lines:]) if tail_lines > 0 else b""
        yield data
        while follow and not previous:
            worker = self.workers.get(pod["metadata"]["uid"])
            running = worker is not None and not worker.finished and container in worker._running
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            if chunk:
                yield chunk
            elif not running:
                return
            else:
                await asyncio.sleep(FOLLOW_POLL_S)
