"""``pods/<name>/log`` for the API server (``kubectl logs``, ``deltaroll sandbox logs``): read
from the log files the pod workers write; the kubelet of the pod's node says whether a followed
container still runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from deltaroll_sandbox.apiserver.statuses import bad_request
from deltaroll_sandbox.apiserver.store import Store
from deltaroll_sandbox.controllers import informers
from deltaroll_sandbox.kubelet.kubelet import Kubelet
from deltaroll_sandbox.kubelet.pod import PodWorker, log_path, pod_dir

FOLLOW_POLL_S = 0.2


class PodLogs:
    """The containers' logs of every node's pods."""

    def __init__(self, store: Store, sandbox_dir: Path, kubelets: Sequence[Kubelet]) -> None:
        self.store = store
        self.sandbox_dir = sandbox_dir
        self.kubelets = kubelets
        self.pods = informers.resource(store, "", "v1", "pods")

    def _worker(self, uid: str) -> PodWorker | None:
        return next((k.workers[uid] for k in self.kubelets if uid in k.workers), None)

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
                while not path.exists() and self._worker(pod["metadata"]["uid"]) is not None:
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
            worker = self._worker(pod["metadata"]["uid"])
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
