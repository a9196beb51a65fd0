"""Inference pods for the sandbox tests, shaped like the chart's agent snippet: the agent as a
native sidecar whose startup probe holds the reference engine back until the first verified
version is on disk; and a recorder of the pod's readiness as a watch sees it."""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import kubernetes

from agent.helpers import NAMESPACE
from deltaroll.api.agent_state import AgentState, parse_agent_state
from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_VERSION,
    WEIGHTS_READY_CONDITION,
)
from deltaroll_demo.manifests import agent_container, inference_pod_spec
from deltaroll_demo.observe import follow_pods
from fixtures.polling import wait_for

PORTS_ANNOTATION = "sandbox.deltaroll.dev/ports"

# Only the first run of the agent carries the crash point; the kubelet's restart runs clean.
CRASH_ONCE_SCRIPT = (
    'if [ ! -e "$CRASH_MARK" ]; then touch "$CRASH_MARK"; export DELTAROLL_CRASH_AT="$CRASH_AT"; '
    'fi; exec deltaroll "$@"'
)


def inference_pod(
    name: str,
    *,
    store_uri: str,
    version: str,
    store_env: dict[str, str],
    crash_at: str | None = None,
    agent_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The demo's pod (the chart's snippet) with a shorter poll and one retry, to keep the tests
    short; ``store_env`` reaches the agent, ``crash_at`` crashes its first run there, and
    ``agent_args`` are added to its command line."""
    agent = agent_container(store_uri, model="tiny", poll_interval=0.2, retry_max=1)
    agent["args"] += list(agent_args)
    agent["env"] += [{"name": key, "value": value} for key, value in store_env.items()]
    if crash_at is not None:
        agent["command"] = ["sh", "-c", CRASH_ONCE_SCRIPT, "deltaroll-agent"]
        agent["env"] += [
            {"name": "CRASH_MARK", "value": "/models/.crashed-once"},
            {"name": "CRASH_AT", "value": crash_at},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {POD_VERSION: version}},
        "spec": inference_pod_spec(agent),
    }


@dataclass(frozen=True)
class PodView:
    """What matters of one pod object, for checks and for the readiness record."""

    ready: str | None
    weights_ready: str | None
    state: AgentState | None
    message: str
    current: str | None
    wanted: str | None
    ports: dict[str, int]

    @classmethod
    def of(cls, pod: Any) -> PodView:
        meta = pod.metadata
        annotations = meta.annotations or {}
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        state, message = parse_agent_state(annotations.get(POD_AGENT_STATE))
        return cls(
            ready=conditions.get("Ready"),
            weights_ready=conditions.get(WEIGHTS_READY_CONDITION),
            state=state,
            message=message,
            current=annotations.get(POD_CURRENT_VERSION),
            wanted=annotations.get(POD_VERSION),
            ports=json.loads(annotations.get(PORTS_ANNOTATION, "{}")),
        )


def view(core: kubernetes.client.CoreV1Api, name: str) -> PodView:
    return PodView.of(core.read_namespaced_pod(name, NAMESPACE))


@dataclass
class ReadinessRecorder:
    """Every version of the pod a watch delivers, from creation on (resumed across timeouts)."""

    core: kubernetes.client.CoreV1Api
    name: str
    views: list[PodView] = field(default_factory=list)
    _seen_version: int = 0  # the pod's resourceVersion in the last event delivered
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def catch_up(self, timeout: float = 30.0) -> None:
        """Wait until the watch has delivered the pod as the API shows it now: a watch lags the
        writes it reports, and the last of them (the kubelet's Ready) is the one that counts."""
        try:
            pod = self.core.read_namespaced_pod(self.name, NAMESPACE)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        now = int(pod.metadata.resource_version)
        wait_for(lambda: self._seen_version >= now, timeout, f"the watch of {self.name} at {now}")

    def stop(self) -> None:
        self.catch_up()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        by_name = f"metadata.name={self.name}"
        follow_pods(self.core, NAMESPACE, self._stop, self._record, field_selector=by_name)

    def _record(self, _: str, pod: Any) -> None:
        self.views.append(PodView.of(pod))
        self._seen_version = int(pod.metadata.resource_version)

    def unsafe_ready(self, verified: set[str]) -> list[PodView]:
        """Views where the pod was Ready while its weights were not a verified version: the
        agent applying to an engine that serves from disk or reloading, or no verified current
        version. (The agent turns weights-ready False and waits for Ready to follow before it
        touches the weights, so a view with weights-ready False and Ready still True is the
        kubelet's lag, not a gap; an engine that patches its weights in memory keeps serving
        its verified version while the disk is patched, and weights-ready stays True.)"""
        safe_states = (AgentState.READY, AgentState.PULLING, AgentState.FAILED)

        def safe(v: PodView) -> bool:
            in_memory = v.state is AgentState.APPLYING and v.weights_ready == "True"
            return (v.state in safe_states or in_memory) and v.current in verified

        return [v for v in self.views if v.ready == "True" and not safe(v)]

    def ready_flips(self) -> list[tuple[str | None, str | None]]:
        """(Ready, current version) each time Ready changed."""
        flips: list[tuple[str | None, str | None]] = []
        for v in self.views:
            if not flips or flips[-1][0] != v.ready:
                flips.append((v.ready, v.current))
        return flips


def agent_metrics(pod: PodView) -> dict[str, float]:
    """The agent's /metrics, parsed (``name{labels}`` -> value)."""
    url = f"http://127.0.0.1:{pod.ports['agent-health']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def engine_checksum(pod: PodView) -> dict[str, Any]:
    url = f"http://127.0.0.1:{pod.ports['admin']}/weights_checksum"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]
