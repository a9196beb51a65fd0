"""The objects the demo creates, as a user would write them: an inference Deployment whose pods run
the reference engine beside the Deltaroll agent, a ModelDeployment that rolls them, ModelDeltas.

Plain dicts (what ``kubectl apply`` takes), so the printed YAML in the README and these stay one
idea. The pod shape follows what the Helm chart's sidecar injection gives a vLLM pod: the agent
reads its pod's annotations from a downwardAPI volume and shares the weights volume with the
engine; the agent is a native sidecar whose startup probe holds the engine back until the
first verified version is on the volume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltaroll.api.annotations import WEIGHTS_READY_CONDITION

GROUP, API_VERSION = "deltaroll.dev", "v1alpha1"
NAMESPACE = "default"
MODEL = "demo-llm"
APP = "demo-llm"
DEPLOYMENT = "demo-llm"
ANALYSIS = "eval-loss"


def agent_container(
    store_uri: str,
    *,
    model: str = MODEL,
    engine_url: str = "http://127.0.0.1:8000",
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
            "--health-port=8081",
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
        "ports": [{"name": "agent-health", "containerPort": 8081}],
        "volumeMounts": [
            {"name": "weights", "mountPath": "/models"},
            {"name": "podinfo", "mountPath": "/etc/deltaroll/podinfo", "readOnly": True},
        ],
    }


def as_native_sidecar(container: dict[str, Any]) -> dict[str, Any]:
    """The agent as the chart's snippet adds it: an init container that keeps running, whose
    startup probe holds the engine back until the first verified version is on the volume."""
    return {
        **container,
        "restartPolicy": "Always",
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "agent-health"},
            "periodSeconds": 1,
            "failureThreshold": 600,
        },
    }


def pod_volumes() -> list[dict[str, Any]]:
    """The weights volume the agent and the engine share, and the pod's annotations file."""
    return [
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
            "--port=8000",
        ],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "weights", "mountPath": "/models"}],
    }


def inference_pod_spec(agent: dict[str, Any]) -> dict[str, Any]:
    """An inference pod: ``agent`` (an :func:`agent_container`) as a native sidecar beside the
    reference engine, the pod Ready only while the agent says its weights are."""
    return {
        "terminationGracePeriodSeconds": 5,
        "readinessGates": [{"conditionType": WEIGHTS_READY_CONDITION}],
        "initContainers": [as_native_sidecar(agent)],
        "containers": [engine_container()],
        "volumes": pod_volumes(),
    }


def inference_deployment(store_uri: str, replicas: int) -> dict[str, Any]:
    """A Deployment of inference pods; their template names no version (the operator does)."""
    pod_spec = inference_pod_spec(agent_container(store_uri))
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
