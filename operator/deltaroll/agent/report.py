"""Reporting through the agent's own pod: its annotations and the weights-ready condition.

- ``deltaroll.dev/current-version``: the version the engine holds, verified (absent before).
- ``deltaroll.dev/agent-state``: :func:`~deltaroll.api.agent_state.format_agent_state`.
- ``deltaroll.dev/peer-port``: where the agent serves its objects to peers, when it does.
- ``deltaroll.dev/last-change``: the last version change's cost
  (:class:`~deltaroll.api.weight_change.WeightChange`), once there was one.
- condition ``deltaroll.dev/weights-ready`` (through ``pods/status``): the pod's readiness gate.

Order matters for the gate: going not-ready, the condition is written before anything else, and
the caller touches the weights only after :meth:`PodReporter.publish` returned; going ready, the
annotations are written first. Conditions go as a strategic merge patch keyed by ``type``, so the
kubelet's own conditions are never overwritten. Nothing is sent when nothing changed, and
what the API answers is read as plain JSON: building the client's models from it took half
of each report's CPU (profiled agents of ``benchmarks/fleet.py``, 64 pods on two cores).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from deltaroll.agent.errors import ReportError
from deltaroll.api.agent_state import AgentState, format_agent_state
from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_LAST_CHANGE,
    POD_PEER_PORT,
    WEIGHTS_READY_CONDITION,
)
from deltaroll.api.parse import json_object
from deltaroll.api.weight_change import WeightChange

log = structlog.get_logger(__name__)

API_TIMEOUT_S = 10.0
UNREADY_TIMEOUT_S = 60.0
UNREADY_POLL_S = 0.1
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class Report:
    """What the pod should say about the agent right now."""

    state: AgentState
    message: str = ""
    current_version: str | None = None
    weights_ready: bool = False
    last_change: WeightChange | None = None

    def annotations(self) -> dict[str, str | None]:
        annotations = {
            POD_AGENT_STATE: format_agent_state(self.state, self.message),
            POD_CURRENT_VERSION: self.current_version,  # None removes it (merge patch)
        }
        if self.last_change is not None:  # kept from the last change until the next
            annotations[POD_LAST_CHANGE] = self.last_change.encode()
        return annotations

    def condition(self, transition: bool) -> dict[str, Any]:
        condition: dict[str, Any] = {
            "type": WEIGHTS_READY_CONDITION,
            "status": "True" if self.weights_ready else "False",
            "reason": self.state.value,
            "message": format_agent_state(self.state, self.message),
        }
        if transition:
            condition["lastTransitionTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return condition


class Reporter(Protocol):
    def publish(self, report: Report) -> None:
        """Make the pod say ``report``; raises :class:`ReportError` when it could not."""
        ...


class PodReporter:
    """Writes :class:`Report` into one pod with the official Kubernetes client."""

    def __init__(
        self, api: Any, namespace: str, name: str, *, peer_port: int | None = None
    ) -> None:
        self._api = api  # kubernetes.client.CoreV1Api
        self.namespace, self.name = namespace, name
        self._serving = {} if peer_port is None else {POD_PEER_PORT: str(peer_port)}
        self._sent_annotations: dict[str, str | None] | None = None
        self._sent_condition: dict[str, Any] | None = None
        self._sent_ready: bool | None = None

    def publish(self, report: Report) -> None:
        if report.weights_ready:
            self._write_annotations(report)
            self._write_condition(report)
        else:
            was_ready = self._sent_ready is not False
            self._write_condition(report)
            if was_ready:
                self._wait_until_not_ready()
            self._write_annotations(report)

    def _wait_until_not_ready(self) -> None:
        """Return once the pod's Ready condition is no longer True (the kubelet has applied the
        readiness gate), so no traffic reaches the pod when the caller touches the weights.
        A pod without the readiness gate never turns unready for us: nothing to wait for."""
        deadline = time.monotonic() + UNREADY_TIMEOUT_S
        while True:
            pod = self._read_pod()
            spec, status = json_object(pod["spec"]), json_object(pod.get("status"))
            gates = [json_object(g).get("conditionType") for g in spec.get("readinessGates") or []]
            if WEIGHTS_READY_CONDITION not in gates:
                log.warning("agent.no_readiness_gate", gate=WEIGHTS_READY_CONDITION)
                return
            conditions = [json_object(c) for c in status.get("conditions") or []]
            ready = [c for c in conditions if c.get("type") == "Ready"]
            if not ready or ready[0].get("status") != "True":
                return
            if time.monotonic() > deadline:
                raise ReportError(
                    f"pod {self.namespace}/{self.name} is still Ready {UNREADY_TIMEOUT_S:.0f}s "
                    f"after {WEIGHTS_READY_CONDITION} turned False; is the kubelet running? "
                    "the agent retries before touching the weights"
                )
            time.sleep(UNREADY_POLL_S)

    def _write_annotations(self, report: Report) -> None:
        annotations = report.annotations() | self._serving
        if annotations == self._sent_annotations:
            return
        body = {"metadata": {"annotations": annotations}}
        self._call("annotate", self._api.patch_namespaced_pod, body, content_type=MERGE_PATCH)
        self._sent_annotations = annotations

    def _write_condition(self, report: Report) -> None:
        condition = report.condition(transition=False)
        if condition == self._sent_condition:
            return
        if report.weights_ready != self._sent_ready:
            condition = report.condition(transition=True)
        body = {"status": {"conditions": [condition]}}
        patch = self._api.patch_namespaced_pod_status
        self._call("set condition on", patch, body, content_type=STRATEGIC_MERGE_PATCH)
        self._sent_condition = report.condition(transition=False)
        self._sent_ready = report.weights_ready

    def _read_pod(self) -> dict[str, Any]:
        """The pod as JSON; :class:`ReportError` for an answer that is not a pod (read as a pod
        without a readiness gate, it would let the weights be touched early)."""
        try:
            pod = json.loads(self._call("read", self._api.read_namespaced_pod))
        except ValueError:  # a proxy's page, a cut-off body
            pod = None
        if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
            raise ReportError(
                f"could not read pod {self.namespace}/{self.name}: the API's answer is not a "
                "pod; the agent retries"
            )
        return pod

    def _call(
        self, what: str, method: Any, *body: dict[str, Any], content_type: str | None = None
    ) -> bytes:
        """What the API answered, unread (the client's models cost more than the call)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        options: dict[str, Any] = {"_request_timeout": API_TIMEOUT_S, "_preload_content": False}
        if content_type:
            options["_content_type"] = content_type
        try:
            response = method(self.name, self.namespace, *body, **options)
            try:
                answer = response.data
            finally:
                response.release_conn()
        except ApiException as exc:
            hint = (
                "give the agent's ServiceAccount pods get/patch and pods/status patch"
                if exc.status in (401, 403)
                else "check that POD_NAME and POD_NAMESPACE name this pod"
                if exc.status == 404
                else "the agent retries"
            )
            raise ReportError(
                f"could not {what} pod {self.namespace}/{self.name} (HTTP {exc.status} "
                f"{exc.reason}): {hint}"
            ) from exc
        except (HTTPError, OSError) as exc:
            raise ReportError(
                f"could not {what} pod {self.namespace}/{self.name}: the Kubernetes API is "
                f"unreachable ({type(exc).__name__}); the agent retries"
            ) from exc
        return bytes(answer)


def core_v1_api(service_account_dir: Path) -> Any:
    """A CoreV1Api with the token of the agent's projected ServiceAccount volume (re-read as
    the kubelet rotates it), else ``KUBECONFIG`` / ~/.kube/config (an agent run by hand)."""
    import kubernetes
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = kubernetes.client.Configuration()
    token = service_account_dir / "token"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and token.exists():
        loader = InClusterConfigLoader(str(token), str(service_account_dir / "ca.crt"))
        loader.load_and_set(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
