"""The objects the demo creates, as a user would write them: an inference Deployment whose pods run
the reference engine beside the Deltaroll agent, a ModelDeployment that rolls them, ModelDeltas.

Plain dicts (what ``kubectl apply`` takes), so the printed YAML in the README and these stay one
idea. The pod shape follows what the Helm chart's sidecar injection gives a vLLM pod: the agent
reads its pod's annotations from a downwardAPI volume and shares the weights volume with the
engine; the agent is a native sidecar whose startup probe holds the engine back until the
first verified version is on the volume. Only the agent holds a ServiceAccount token (a
projected volume; the pod mounts none by default), and the chart's admission policy keeps it to
its own pod; the engine's reload routes listen on the pod's loopback only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltaroll.api.agent_access import AGENT_SERVICE_ACCOUNT, agent_access_objects
from deltaroll.api.annotations import WEIGHTS_READY_CONDITION
from deltaroll.api.peers import AUDIENCE as PEER_AUDIENCE
from deltaroll.api.peers import DEFAULT_PEER_PORT, PEER_PORT_NAME
from deltaroll.controllers.pod_defaults import container_security_context, pod_security_context

GROUP, API_VERSION = "deltaroll.dev", "v1alpha1"
NAMESPACE = "default"
MODEL = "demo-llm"
APP = "demo-llm"
DEPLOYMENT = "demo-llm"
ANALYSIS = "eval-loss"
ENGINE_PORT, ENGINE_ADMIN_PORT, AGENT_HEALTH_PORT = 8000, 8001, 8081
#: A canary step's pods are the only ones pulling: a short wait for peers keeps the demo's length.
PEER_WAIT_S = 1.0
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PEER_TOKEN_PATH = "peer-token"  # noqa: S105 - a file name
#: The demo holds its namespace to Pod Security "restricted", as a careful admin would.
RESTRICTED = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
)


def agent_container(
    store_uri: str,
    *,
    model: str = MODEL,
    engine_url: str = f"http://127.0.0.1:{ENGINE_ADMIN_PORT}",
    poll_interval: float = 0.3,
    retry_max: float = 2,
) -> dict[str, Any]:
    """The Deltaroll agent: pulls what the pod's annotation asks for, reloads the engine."""
    return {
        "name": "deltaroll-agent",
        "image": "ghcr.io/deltaroll/agent:0.1.0",
        "command": ["deltaroll"],
        "args": [
            "agent",
            "run",
            f"--store={store_uri}",
            f"--model={model}",
            "--annotations-file=/etc/deltaroll/podinfo/annotations",
            "--weights-dir=/models/weights",
            "--engine=reference",
            f"--engine-url={engine_url}",
            f"--health-port={AGENT_HEALTH_PORT}",
            f"--service-account-dir={SERVICE_ACCOUNT_MOUNT}",  # mapped by the sandbox
            f"--poll-interval={poll_interval}",
            f"--retry-max={retry_max}",
            "--log-format=console",
        ],  # fmt: skip
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        # loopback only; declared because the sandbox maps only declared ports to free ones
        "ports": [{"name": "agent-health", "containerPort": AGENT_HEALTH_PORT}],
        "volumeMounts": [
            {"name": "weights", "mountPath": "/models"},
            {"name": "podinfo", "mountPath": "/etc/deltaroll/podinfo", "readOnly": True},
            {"name": "agent-token", "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True},
        ],
    }


def as_native_sidecar(container: dict[str, Any]) -> dict[str, Any]:
    """The agent as the chart's snippet adds it: an init container that keeps running, whose
    startup probe holds the engine back until the first verified version is on the volume."""
    return {
        **container,
        "restartPolicy": "Always",
        "startupProbe": {  # exec: /healthz listens on the pod's loopback only
            "exec": {"command": ["python3", "-c", health_probe(AGENT_HEALTH_PORT)]},
            "periodSeconds": 1,
            "failureThreshold": 600,
        },
    }


def health_probe(port: int) -> str:
    """A startup probe run inside the agent's container: GET /healthz on loopback."""
    return (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=2)"
    )


def agent_token_volume(*, for_peers: bool = True) -> dict[str, Any]:
    """What kube-apiserver's default token volume holds (a pod-bound token, the API's CA, the
    namespace), mounted in the agent's container only; ``for_peers``: and a token for the
    peers' audience (``--peer-token``), which opens nothing but other agents' peer servers."""
    peer_token = {"path": PEER_TOKEN_PATH, "audience": PEER_AUDIENCE, "expirationSeconds": 3600}
    return {
        "name": "agent-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                *([{"serviceAccountToken": peer_token}] if for_peers else []),
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ]
        },
    }


def pod_volumes() -> list[dict[str, Any]]:
    """The weights volume the agent and the engine share, the pod's annotations file and the
    agent's token."""
    return [
        agent_token_volume(),
        {"name": "weights", "emptyDir": {}},
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
                ]
            },
        },
    ]


def engine_container() -> dict[str, Any]:
    """The reference engine (a small transformers server with /eval and /reload)."""
    return {
        "name": "engine",
        "image": "ghcr.io/deltaroll/reference-engine:0.1.0",
        "command": ["deltaroll"],
        "args": [
            "engine",
            "serve",
            "--kind=reference",
            "--model-path=/models/weights",
            f"--port={ENGINE_PORT}",
            f"--admin-port={ENGINE_ADMIN_PORT}",  # on 127.0.0.1: the agent's, not the Service's
        ],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "ports": [
            {"name": "http", "containerPort": ENGINE_PORT},
            {"name": "admin", "containerPort": ENGINE_ADMIN_PORT},  # the sandbox maps it
        ],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "weights", "mountPath": "/models"}],
    }


def serve_peers(agent: dict[str, Any], app: str, *, wait_s: float | None = None) -> None:
    """Let ``agent`` (an :func:`agent_container`) take objects from the agents of the pods
    labelled ``app=<app>`` and serve them its own; ``wait_s``: how long it waits for a peer to
    hold an object before the store (a canary's first pod finds no peer holding it)."""
    wait = [] if wait_s is None else [f"--peer-wait={wait_s:g}"]
    agent["args"] = [*agent["args"], f"--peers=app={app}", "--peer-host=127.0.0.1",
                     f"--peer-port={DEFAULT_PEER_PORT}", *wait, *peer_token_args()]  # fmt: skip
    agent["ports"] = [*agent["ports"], {"name": PEER_PORT_NAME, "containerPort": DEFAULT_PEER_PORT}]


def peer_token_args() -> list[str]:
    """The agent's token for its peers, from :func:`agent_token_volume`."""
    return [f"--peer-token={SERVICE_ACCOUNT_MOUNT}/{PEER_TOKEN_PATH}"]


def inference_pod_spec(agent: dict[str, Any]) -> dict[str, Any]:
    """An inference pod: ``agent`` (an :func:`agent_container`) as a native sidecar beside the
    reference engine, the pod Ready only while the agent says its weights are; it passes Pod
    Security "restricted", like every pod the operator creates."""
    sidecar, engine = as_native_sidecar(agent), engine_container()
    for container in (sidecar, engine):
        container["securityContext"] = container_security_context()
    return {
        "serviceAccountName": AGENT_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,  # the engine gets no token; the agent its own
        "terminationGracePeriodSeconds": 5,
        "securityContext": pod_security_context(),
        "readinessGates": [{"conditionType": WEIGHTS_READY_CONDITION}],
        "initContainers": [sidecar],
        "containers": [engine],
        "volumes": pod_volumes(),
    }


def agent_access() -> list[dict[str, Any]]:
    """What the chart installs for the agent in the demo's namespace (RBAC, admission policy)."""
    return agent_access_objects(NAMESPACE)


def inference_deployment(store_uri: str, replicas: int) -> dict[str, Any]:
    """A Deployment of inference pods; their template names no version (the operator does)."""
    agent = agent_container(store_uri)
    serve_peers(agent, APP, wait_s=PEER_WAIT_S)
    pod_spec = inference_pod_spec(agent)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {"metadata": {"labels": {"app": APP}}, "spec": pod_spec},
        },
    }


def modeldeployment_manifest(
    name: str,
    store_uri: str,
    version: str,
    labels: dict[str, str],
    *,
    model: str = MODEL,
    **spec: Any,
) -> dict[str, Any]:
    """A ModelDeployment of ``model`` for the pods labelled ``labels`` on the reference engine;
    ``spec`` adds fields (wire names: ``strategy``, ``analysisTemplates``...)."""
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": model,
            "store": {"uri": store_uri},
            "version": version,
            "selector": {"matchLabels": labels},
            "engine": {"kind": "reference", "port": 8000},
            **spec,
        },
    }


def model_deployment(store_uri: str, version: str, eval_texts: list[str]) -> dict[str, Any]:
    """25% canary, an eval-loss analysis against the stable pods, 50%, 100%; rollback on failure."""
    steps = [
        {"setWeight": 25},
        {"analysis": {"templates": [{"templateName": ANALYSIS}]}},
        {"setWeight": 50},
        {"setWeight": 100},
    ]
    return modeldeployment_manifest(
        DEPLOYMENT,
        store_uri,
        version,
        {"app": APP},
        strategy={"canary": {"steps": steps}},
        analysisTemplates=[
            {
                "name": ANALYSIS,
                "provider": {"http": {"body": json.dumps({"texts": eval_texts})}},
                "successCondition": "result <= baseline * 1.05",
                "interval": "1s",
                "count": 2,
                "consecutiveErrorLimit": 2,
            }
        ],
        maxUnavailable=1,
        progressDeadlineSeconds=300,
    )


def model_delta(store_uri: str, version: str, parent: str, checkpoint: Path) -> dict[str, Any]:
    """Publish ``checkpoint`` as ``version``: the diff against ``parent``, computed by a Job."""
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": "ModelDelta",
        "metadata": {"name": f"{MODEL}-{version}", "namespace": NAMESPACE},
        "spec": {
            "model": MODEL,
            "version": version,
            "parent": parent,
            "store": {"uri": store_uri},
            "source": {"checkpoint": {"uri": f"file://{checkpoint}"}},
            "job": {"backoffLimit": 1},
        },
    }
