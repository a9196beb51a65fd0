"""Peers end to end on the sandbox: the real operator rolls v1 -> v2 to three inference pods whose
agents serve each other (``--peers`` with the ModelDeployment's selector, the chart's RBAC and
own-pod policy, peer ports found through the API); each object of the delta crosses the store
link at most twice (the seeders) plus once per pod that peers did not serve (a peer listing that
timed out on a loaded machine makes that agent seed everything: the intended fallback, counted
in its metrics), every pod gets each object exactly once from one source, and every pod ends
Ready on v2 with the engine holding v2's bytes."""

from __future__ import annotations

import urllib.error
import urllib.request
from functools import partial
from typing import Any

import kubernetes
import pytest

from agent.helpers import NAMESPACE, Published
from agent.sandbox_pods import engine_checksum, inference_pod, view
from controllers.conftest import Operator, wait_for
from controllers.test_e2e_rollout import (
    GROUP,
    PLURAL,
    START_TIMEOUT_S,
    VERSION,
    deployment,
    md_status,
    published,  # noqa: F401 - the module's fixture
    wait_phase,
)
from deltaroll.api.agent_access import AGENT_SERVICE_ACCOUNT
from deltaroll.api.annotations import POD_PEER_PORT
from deltaroll.api.peers import AUDIENCE as PEER_AUDIENCE
from deltaroll.api.peers import DEFAULT_PEER_PORT, PEER_PORT_NAME, object_path
from deltaroll_demo.manifests import peer_token_args
from deltaroll_sandbox.testing import RunningSandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PODS = ("peer-0", "peer-1", "peer-2")


def peer_pod(name: str, store: Published, version: str) -> dict[str, Any]:
    """The tests' inference pod, its agent serving peers on a declared containerPort (the
    sandbox maps it to a free loopback port and the agent advertises what it bound)."""
    pod = inference_pod(
        name, store_uri=store.uri, version=version, store_env={},
        agent_args=("--peers=app=tiny-llm", "--peer-host=127.0.0.1",
                    f"--peer-port={DEFAULT_PEER_PORT}", "--peer-wait=60", *peer_token_args()),
    )  # fmt: skip
    pod["metadata"]["labels"] = {"app": "tiny-llm"}
    for container in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
        if container["name"] == "deltaroll-agent":
            container["ports"].append({"name": PEER_PORT_NAME, "containerPort": DEFAULT_PEER_PORT})
    return pod


def metric(core: kubernetes.client.CoreV1Api, name: str, metric_name: str) -> float:
    port = view(core, name).ports["agent-health"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(metric_name + " "):
                return float(line.rpartition(" ")[2])
    raise AssertionError(f"{name}: no {metric_name}")


def totals(core: kubernetes.client.CoreV1Api) -> dict[str, float]:
    names = (
        "deltaroll_agent_bucket_objects_total",
        "deltaroll_agent_downloaded_bytes_total",
        "deltaroll_agent_peer_bytes_total",
        "deltaroll_agent_peer_rejected_total",
        "deltaroll_agent_peer_refused_total",
        "deltaroll_agent_served_bytes_total",
        "deltaroll_agent_unpeered_objects_total",
    )
    return {n: sum(metric(core, pod, n) for pod in PODS) for n in names}


def test_three_pods_take_the_delta_from_the_store_at_most_twice_per_object(
    cluster: RunningSandbox,
    operator: Operator,
    published: Published,  # noqa: F811
) -> None:
    v1, v2 = published.ids["v1"], published.ids["v2"]
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    for name in PODS:
        core.create_namespaced_pod(NAMESPACE, peer_pod(name, published, v1))
    rollout = deployment(published, v1)
    rollout["spec"]["strategy"] = {"canary": {"steps": [{"setWeight": 100}]}}
    rollout["spec"]["maxUnavailable"] = "100%"
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, rollout)
    phase = partial(wait_phase, custom, operator.log)
    wait_for(  # three engines import torch on two busy cores
        lambda: md_status(custom).get("stableVersion") == v1,
        len(PODS) * START_TIMEOUT_S / 2,
        "three engines up on v1",
        operator.log,
    )
    phase("Healthy", stableVersion=v1)

    def every_peer_listed() -> bool:
        return all(
            (core.read_namespaced_pod(n, NAMESPACE).metadata.annotations or {}).get(POD_PEER_PORT)
            for n in PODS
        )

    wait_for(every_peer_listed, 60, "every agent advertising its peer port")
    before = totals(core)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, rollout["metadata"]["name"], {"spec": {"version": v2}}
    )
    phase("Healthy", stableVersion=v2)
    wait_for(
        lambda: all(view(core, n).current == v2 and view(core, n).ready == "True" for n in PODS),
        START_TIMEOUT_S,
        "every pod Ready on v2",
        operator.log,
    )
    after = totals(core)
    moved = {k: after[k] - before[k] for k in after}
    manifest = published.store().versions("tiny")[v2]
    assert manifest.delta is not None
    objects = {ref.digest: ref.size for ref in manifest.delta.objects}
    unpeered = moved["deltaroll_agent_unpeered_objects_total"]
    assert 0 < moved["deltaroll_agent_bucket_objects_total"] <= 2 * len(objects) + unpeered
    # peers served, unless a fallback made the pods that were to ask them fetch it themselves
    assert moved["deltaroll_agent_peer_bytes_total"] > 0 or unpeered > 0
    assert moved["deltaroll_agent_peer_bytes_total"] + moved[
        "deltaroll_agent_downloaded_bytes_total"
    ] == 3 * sum(objects.values())
    assert moved["deltaroll_agent_served_bytes_total"] == moved["deltaroll_agent_peer_bytes_total"]
    assert moved["deltaroll_agent_peer_rejected_total"] == 0
    assert moved["deltaroll_agent_peer_refused_total"] == 0  # the API vouched for every peer
    for name in PODS:
        assert engine_checksum(view(core, name))["version"] == v2
    assert_strangers_are_refused(core, PODS[0], next(iter(objects)))
    client.close()


def assert_strangers_are_refused(core: kubernetes.client.CoreV1Api, pod: str, digest: str) -> None:
    """The sandbox's real TokenReview behind a peer server: no token, a token of the agent's
    ServiceAccount bound to no pod, and its API token all get nothing."""
    port = int(core.read_namespaced_pod(pod, NAMESPACE).metadata.annotations[POD_PEER_PORT])

    def status(token: str | None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{object_path('tiny', digest)}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def token(audiences: list[str]) -> str:
        spec = kubernetes.client.V1TokenRequestSpec(audiences=audiences, expiration_seconds=600)
        body = kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
        answer = core.create_namespaced_service_account_token(
            AGENT_SERVICE_ACCOUNT, NAMESPACE, body
        )
        return str(answer.status.token)

    assert status(None) == 401
    assert status(token([PEER_AUDIENCE])) == 403  # not bound to a pod of the deployment
    assert status(token(["https://kubernetes.default.svc.cluster.local"])) == 403
