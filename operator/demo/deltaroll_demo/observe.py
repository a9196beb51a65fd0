"""What the demo reads back from the cluster: every fact it narrates or checks comes from the API
(pods' annotations and conditions, the custom resources' status) or from the agents' /metrics,
never from what the demo meant to do."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deltaroll.api.agent_state import parse_agent_state
from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_LAST_CHANGE,
    POD_VERSION,
    WEIGHTS_READY_CONDITION,
)
from deltaroll.api.weight_change import WeightChange, parse_weight_change
from deltaroll_demo.manifests import API_VERSION, APP, DEPLOYMENT, GROUP, NAMESPACE

PORTS_ANNOTATION = "sandbox.deltaroll.dev/ports"  # host ports the sandbox's kubelet gave the pod
DOWNLOADED_METRIC = "deltaroll_agent_downloaded_bytes_total"
PEER_METRIC = "deltaroll_agent_peer_bytes_total"


@dataclass(frozen=True)
class Pod:
    """One inference pod as the API shows it."""

    name: str
    wanted: str | None  # the version id the operator asked for
    current: str | None  # the version id the agent verified and the engine serves
    agent_state: str
    agent_message: str
    ready: bool
    weights_ready: bool
    ports: dict[str, int]
    last_change: WeightChange | None = None  # the agent's report of its last version change

    @classmethod
    def of(cls, body: Any) -> Pod:
        """From the official client's ``V1Pod``."""
        conditions = {c.type: c.status for c in (body.status.conditions or [])}
        return cls.of_parts(body.metadata.name, body.metadata.annotations or {}, conditions)

    @classmethod
    def of_parts(
        cls, name: str, annotations: Mapping[str, str], conditions: Mapping[str, str]
    ) -> Pod:
        """From the pod's name, annotations and conditions (type -> status)."""
        state, message = parse_agent_state(annotations.get(POD_AGENT_STATE))
        return cls(
            name=name,
            wanted=annotations.get(POD_VERSION),
            current=annotations.get(POD_CURRENT_VERSION),
            agent_state=state.value if state is not None else "-",
            agent_message=message,
            ready=conditions.get("Ready") == "True",
            weights_ready=conditions.get(WEIGHTS_READY_CONDITION) == "True",
            ports=json.loads(annotations.get(PORTS_ANNOTATION, "{}")),
            last_change=parse_weight_change(annotations.get(POD_LAST_CHANGE)),
        )


class Cluster:
    """Typed reads of the sandbox's API for the demo's objects."""

    def __init__(self, api_client: Any) -> None:
        import kubernetes

        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    def pods(self) -> list[Pod]:
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={APP}").items
        live = [p for p in listed if p.metadata and p.metadata.deletion_timestamp is None]
        return sorted((Pod.of(p) for p in live), key=lambda pod: pod.name)

    def deployment_status(self) -> dict[str, Any]:
        body = self._get("modeldeployments", DEPLOYMENT)
        return dict((body or {}).get("status") or {})

    def delta_status(self, name: str) -> dict[str, Any]:
        body = self._get("modeldeltas", name)
        return dict((body or {}).get("status") or {})

    def events(self, name: str) -> list[str]:
        """Reasons of the Events about the object ``name``, oldest first."""
        listed = self.core.list_namespaced_event(
            NAMESPACE, field_selector=f"involvedObject.name={name}"
        ).items
        return [str(e.reason) for e in listed]

    def _get(self, plural: str, name: str) -> dict[str, Any] | None:
        import kubernetes

        try:
            body = self.custom.get_namespaced_custom_object(
                GROUP, API_VERSION, NAMESPACE, plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body) if isinstance(body, dict) else None


def follow_pods(
    core: Any,
    namespace: str,
    stop: threading.Event,
    on_event: Callable[[str, Any], None],
    **selector: str,
) -> None:
    """Hand every pod event a watch delivers to ``on_event(type, pod)`` until ``stop`` is set,
    resuming across the watch's timeouts (a list again, from now, after 410 Gone)."""
    import kubernetes

    resource_version = None
    while not stop.is_set():
        watch = kubernetes.watch.Watch()
        try:
            for event in watch.stream(
                core.list_namespaced_pod,
                namespace,
                resource_version=resource_version,
                timeout_seconds=2,
                **selector,
            ):
                resource_version = event["object"].metadata.resource_version
                on_event(event["type"], event["object"])
                if stop.is_set():
                    watch.stop()
        except kubernetes.client.ApiException as exc:
            if exc.status != 410:
                raise
            resource_version = None


class WantedWatch:
    """How many pods asked for each version, after every change a pod watch delivers.

    A rollout step can last less than one poll (a 50% step ends as soon as its second pod
    serves), so the canary's steps are read from every event rather than from snapshots.
    """

    def __init__(self, core: Any) -> None:
        self.core = core
        self.counts: list[Counter[str | None]] = []
        self._wanted: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wanted-watch", daemon=True)

    def __enter__(self) -> WantedWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def seen(self, *versions: str) -> set[int]:
        """Each number of pods that asked for any of ``versions`` at once."""
        return {sum(count[v] for v in versions) for count in self.counts}

    def _run(self) -> None:
        follow_pods(self.core, NAMESPACE, self._stop, self._record, label_selector=f"app={APP}")

    def _record(self, kind: str, body: Any) -> None:
        name = body.metadata.name
        if kind == "DELETED" or body.metadata.deletion_timestamp is not None:
            self._wanted.pop(name, None)
        else:
            self._wanted[name] = (body.metadata.annotations or {}).get(POD_VERSION)
        self.counts.append(Counter(self._wanted.values()))


@dataclass(frozen=True)
class Received:
    """What an agent has received so far: from the store (across the bucket link) and from its
    peers (cache hits excluded)."""

    bucket: int
    peers: int

    @property
    def total(self) -> int:
        return self.bucket + self.peers

    def __sub__(self, other: Received) -> Received:
        return Received(self.bucket - other.bucket, self.peers - other.peers)


def received_bytes(pod: Pod) -> Received | None:
    """The agent's counts of bytes it received, from its /metrics; None if it did not answer."""
    port = pod.ports.get("agent-health")
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return None
    counts = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in (DOWNLOADED_METRIC, PEER_METRIC):
            counts[name] = int(float(value))
    if DOWNLOADED_METRIC not in counts:
        return None
    return Received(counts[DOWNLOADED_METRIC], counts.get(PEER_METRIC, 0))


def downloaded_bytes(pod: Pod) -> int | None:
    """The agent's count of bytes it downloaded from the store (cache hits excluded)."""
    received = received_bytes(pod)
    return None if received is None else received.bucket
