"""The documented vLLM pod on the sandbox with the real operator: the engine on the pod's
loopback, ``deltaroll engine proxy`` on the pod's port, the agent beside them. A ModelDeployment
rolls the pod from v1 to v2 (the agent reloads and tags the engine over loopback), while a
tenant who reaches the pod's port gets inference and none of the engine's admin routes: it can
neither pause the engine nor set the version the agent reads back."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.helpers import MODEL, NAMESPACE
from agent.sandbox_pods import PodView, inference_pod, view
from controllers.conftest import Operator, wait_for
from controllers.modeldelta_world import apply
from deltaroll.checkpoint import checkpoint_version
from deltaroll.controllers.pod_defaults import container_security_context
from deltaroll.engines.inference_routes import ADMIN_PATHS
from deltaroll.store import Store
from deltaroll_demo.manifests import modeldeployment_manifest
from deltaroll_sandbox.testing import RunningSandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TESTS = Path(__file__).resolve().parents[1]
POD = "vllm-0"
ENGINE_PORT, POD_PORT = 8001, 8000


def vllm_pod(store_uri: str, version: str) -> dict[str, Any]:
    """The chart README's vLLM pod, with the vLLM stand-in as its engine process."""
    pod = inference_pod(POD, store_uri=store_uri, version=version, store_env={})
    spec = pod["spec"]
    [agent] = spec["initContainers"]
    agent["args"] = [
        {"--engine=reference": "--engine=vllm"}.get(arg, arg) for arg in agent["args"]
        if not arg.startswith("--engine-url=")
    ] + [f"--engine-url=http://127.0.0.1:{ENGINE_PORT}"]  # fmt: skip
    engine = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.27.0",
        "command": ["python", "-m", "engines.fake_vllm_pod"],
        "args": [f"--port={ENGINE_PORT}", "--served-dir=/models/weights"],
        "env": [{"name": "PYTHONPATH", "value": f"{TESTS}:{os.environ.get('PYTHONPATH', '')}"}],
        # Declared only so the sandbox gives the pod's loopback port a free one of the host's.
        "ports": [{"name": "engine", "containerPort": ENGINE_PORT}],
        "volumeMounts": [{"name": "weights", "mountPath": "/models"}],
        "securityContext": container_security_context(),
    }
    proxy = {
        "name": "engine-proxy",
        "image": "ghcr.io/deltaroll/agent:0.1.0",
        "command": ["deltaroll"],
        "args": [
            "engine",
            "proxy",
            "--allow=vllm",
            f"--listen=127.0.0.1:{POD_PORT}",
            f"--upstream=http://127.0.0.1:{ENGINE_PORT}",
        ],  # fmt: skip
        "ports": [{"name": "http", "containerPort": POD_PORT}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
        "securityContext": container_security_context(),
    }
    spec["containers"] = [engine, proxy]
    pod["metadata"]["labels"] = {"app": "vllm-served"}
    return pod


def send(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def serving(core: Any, version: str) -> PodView | None:
    pod = view(core, POD)
    return pod if pod.current == version and pod.ready == "True" else None


def test_a_rollout_reaches_the_engine_over_loopback_and_a_tenant_only_inference(
    cluster: RunningSandbox, operator: Operator, tmp_path: Path, trained: list[Path]
) -> None:
    import kubernetes

    store = Store(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "push-cache")
    store.push(MODEL, trained[0], name="v1")
    store.push(MODEL, trained[1], base=trained[0], name="v2")
    v1, v2 = checkpoint_version(trained[0]), checkpoint_version(trained[1])
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_pod(NAMESPACE, vllm_pod(store.uri, "v1"))
    md = modeldeployment_manifest(
        "vllm-served", store.uri, "v1", {"app": "vllm-served"}, model=MODEL,
        engine={"kind": "vllm", "port": POD_PORT},
    )  # fmt: skip
    apply(cluster, md)
    pod = wait_for(lambda: serving(core, v1), 240, "the pod serving v1", operator.log)
    tenant, engine = pod.ports["http"], pod.ports["engine"]

    status, answer = send(tenant, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert status == 200 and answer["choices"], answer
    for method, path, body in [
        ("POST", "/pause", None),
        ("POST", "/update_weight_version", {"weight_version": "tenant-chose-this"}),
        ("POST", "/collective_rpc", {"method": "reload_weights"}),
        ("GET", "/weight_info", None),
    ]:
        assert send(tenant, method, path, body)[0] == 404, path
    assert {"/pause", "/update_weight_version", "/collective_rpc"} <= ADMIN_PATHS
    assert send(engine, "GET", "/weight_info")[1]["weight_version"] == v1  # the agent's word

    apply(cluster, {**md, "spec": {**md["spec"], "version": "v2"}})
    wait_for(lambda: serving(core, v2), 240, "the pod serving v2", operator.log)
    assert send(engine, "GET", "/weight_info")[1]["weight_version"] == v2
    assert send(tenant, "POST", "/v1/completions", {"prompt": "hi"})[0] == 200
    client.close()
