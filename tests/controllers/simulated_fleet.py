"""Inference pods without processes, for tests and benchmarks of the operator alone.

A simulated pod is a pod object on an API-only sandbox (``run_pods=False``) whose agent's part
(``current-version``, ``agent-state`` and the Ready condition) is written through the API, as a
real agent writes it; :class:`ObedientAgents` does that whenever the operator asks a pod for a
version. The operator cannot tell the difference: it reads the same annotations and
conditions. The versions are real, pushed to a ``file://`` store (two tiny checkpoints), so the
operator resolves them as it would any other.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from deltaroll.api.agent_state import AgentState, format_agent_state
from deltaroll.api.annotations import POD_AGENT_STATE, POD_CURRENT_VERSION, POD_VERSION
from deltaroll.store import Store
from deltaroll_demo.manifests import modeldeployment_manifest

MODEL = "tiny"
NAMESPACE = "default"
# How long a read waits for the sandbox's loop: with a thousand objects on loaded cores its queue
# of requests can hold it for more than the default 10 s.
LOOP_WAIT_S = 120.0
GROUP, VERSION, PLURAL = "deltaroll.dev", "v1alpha1", "modeldeployments"


def push_versions(root: Path, names: tuple[str, ...] = ("v1", "v2")) -> str:
    """A ``file://`` store under ``root`` holding ``names`` of :data:`MODEL`; its URI."""
    from safetensors.numpy import save_file

    store = Store(f"file://{root / 'store'}", cache_dir=root / "push-cache")
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((64, 64)).astype(np.float32)
    base = None
    for step, name in enumerate(names):
        weights[step, :8] += 1.0  # a few elements change per version
        checkpoint = root / "checkpoints" / name
        checkpoint.mkdir(parents=True)
        (checkpoint / "config.json").write_text('{"model_type": "tiny"}')
        save_file({"w": weights, "b": weights[0].copy()}, str(checkpoint / "model.safetensors"))
        store.push(MODEL, checkpoint, base=base, anchor=base is None, name=name)
        base = checkpoint
    return f"file://{root / 'store'}"


def pod(name: str, labels: dict[str, str], serving: str | None) -> dict[str, Any]:
    """A pod that ``serving`` already runs (None: a new pod the operator gives a version)."""
    annotations = {}
    if serving is not None:
        annotations = {
            POD_VERSION: serving,
            POD_CURRENT_VERSION: serving,
            POD_AGENT_STATE: format_agent_state(AgentState.READY),
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "engine", "image": "none", "command": ["true"]}]},
    }


def ready(core: Any, name: str, namespace: str = NAMESPACE) -> None:
    """The pod's Ready condition, as the kubelet sets it once its probes pass."""
    condition = {"type": "Ready", "status": "True"}
    core.patch_namespaced_pod_status(
        name, namespace, {"status": {"phase": "Running", "conditions": [condition]}}
    )


def modeldeployment(
    name: str, store_uri: str, version: str, labels: dict[str, str], **spec: Any
) -> dict[str, Any]:
    """A ModelDeployment of :data:`MODEL` for the pods labelled ``labels``."""
    return modeldeployment_manifest(name, store_uri, version, labels, model=MODEL, **spec)


class ObedientAgents:
    """The agents of ``pods``: each pod serves what the operator asks for, at once. A thread
    that watches the pods and writes each agent's report through the API."""

    def __init__(self, api_client: Any, pods: list[str], namespace: str = NAMESPACE) -> None:
        import kubernetes

        self.core = kubernetes.client.CoreV1Api(api_client)
        self.pods, self.namespace = set(pods), namespace
        self._watch = kubernetes.watch.Watch()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obedient-agents", daemon=True)

    def start(self) -> ObedientAgents:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop obeying (the watch stream itself ends with the sandbox)."""
        self._stopped.set()
        self._watch.stop()

    def _run(self) -> None:
        from urllib3.exceptions import HTTPError

        try:
            self._obey()
        except (HTTPError, OSError):
            if not self._stopped.is_set():
                raise

    def _obey(self) -> None:
        for event in self._watch.stream(
            self.core.list_namespaced_pod, self.namespace, timeout_seconds=3600
        ):
            if self._stopped.is_set():
                return
            meta = event["object"].metadata
            if meta.name not in self.pods or event["type"] == "DELETED":
                continue
            annotations = meta.annotations or {}
            wanted = annotations.get(POD_VERSION)
            if wanted is not None and annotations.get(POD_CURRENT_VERSION) != wanted:
                report = {
                    POD_CURRENT_VERSION: wanted,
                    POD_AGENT_STATE: format_agent_state(AgentState.READY),
                }
                self.core.patch_namespaced_pod(
                    meta.name, self.namespace, {"metadata": {"annotations": report}}
                )


def read(sandbox: Any, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """An object as the sandbox stores it, read in its own process: no request, so a test's
    reads are not counted among the operator's."""
    store = sandbox.sandbox.api.store
    group, version = ("", "v1") if plural == "pods" else (GROUP, VERSION)

    def find() -> Any:
        rtype = store.registry.lookup(group, version, plural)
        return store.find(rtype, namespace, name)

    found = sandbox.call(find, timeout=LOOP_WAIT_S)
    return dict(found) if found is not None else {}


def requests_since(sandbox: Any, since: float) -> list[Any]:
    """The one-off requests the sandbox served after ``since`` (time.monotonic()), watch streams
    and Events left out: what a client asked of the objects themselves."""
    records = sandbox.call(lambda: list(sandbox.sandbox.api.audit), timeout=LOOP_WAIT_S)
    return [r for r in records if r.at > since and not r.watch and "/events" not in r.path]


def quiet_since(sandbox: Any, seconds: float = 1.0) -> float | None:
    """When the last ``seconds`` began (time.monotonic()), if no request came in them."""
    start = time.monotonic() - seconds
    return None if requests_since(sandbox, start) else start
