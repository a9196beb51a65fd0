"""One download per node, end to end (issue 17): a two-node sandbox, the node cache DaemonSet,
the real operator rolling a ModelDeployment of four inference pods from v1 to v2.

The pods are spread two per node (a topology spread constraint); the agents reach their node's
cache at ``status.hostIP`` and its hostPort and authenticate with a pod-bound token for the
cache's audience (no hostPath in the tenant pods: the namespace stays Pod Security
"restricted"). Each object crosses the store link at most once per node (the agents' and the
daemons' metrics say so) and every pod ends serving v2 bit-exact. Crashes mid-fill and tampered
cache files are covered against the same daemon in tests/agent/test_node_cache.py.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from agent.helpers import NAMESPACE, Published
from agent.sandbox_pods import agent_metrics, engine_checksum, view
from controllers.conftest import REPO, RESTRICTED_LABELS, Operator, wait_for
from controllers.test_e2e_rollout import (  # noqa: F401 - published: the fixture
    GROUP,
    PLURAL,
    VERSION,
    deployment,
    fleet,
    md_status,
    published,
)
from deltaroll.api.agent_access import agent_access_objects
from deltaroll_demo.node_cache import node_cache_objects, spread_over_nodes, use_node_cache
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
NODES = ("deltaroll-sandbox-1", "deltaroll-sandbox-2")
START_TIMEOUT_S = 480.0  # four engines import torch and transformers on two busy cores


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningSandbox]:
    """Two nodes; the CRDs, the agent's identity and a restricted namespace, as in conftest."""
    with running_sandbox(tmp_path / "sandbox", nodes=2) as sandbox:
        sandbox.kubectl("apply", "-f", str(REPO / "crds"))
        access = yaml.safe_dump_all(agent_access_objects(NAMESPACE))
        sandbox.kubectl("apply", "-f", "-", input=access)
        sandbox.kubectl("label", "namespace", NAMESPACE, *RESTRICTED_LABELS)
        yield sandbox


def free_port_on_nodes() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.1.1", 0))
        return int(probe.getsockname()[1])


def inference_fleet(versions: Published, port: int, replicas: int) -> dict[str, Any]:
    """The tests' inference pod, its agent pointed at its node's cache, spread over the nodes."""
    manifest = fleet(versions, replicas)
    spec = manifest["spec"]["template"]["spec"]
    use_node_cache(spec, spec["initContainers"][0], port)
    spread_over_nodes(spec, {"app": "tiny-fleet"})
    return manifest


def modeldeployment(versions: Published, version: str) -> dict[str, Any]:
    """The rollout tests' ModelDeployment for the fleet, all pods at once, no analysis."""
    manifest = deployment(versions, version)
    spec = manifest["spec"]
    spec["selector"] = {"matchLabels": {"app": "tiny-fleet"}}
    del spec["strategy"], spec["analysisTemplates"]
    spec.update(maxUnavailable=2, progressDeadlineSeconds=400)
    return manifest


def daemon_metrics(node_index: int, port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.1.{node_index}:{port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return {
        key: float(value)
        for key, _, value in (line.rpartition(" ") for line in lines if not line.startswith("#"))
        if key
    }


def daemon_answers(node_index: int, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.1.{node_index}:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def test_each_object_crosses_the_store_link_once_per_node(
    cluster: RunningSandbox,
    published: Published,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    port = free_port_on_nodes()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(node_cache_objects(port)))
    operator = Operator(cluster, tmp_path / "operator.log")
    operator.start()
    # before any pod pulls: an agent that finds its node's cache not listening yet downloads
    # on its own (as it should), and the node's objects would cross the store link twice
    for index, node in enumerate(NODES, start=1):
        wait_for(lambda i=index: daemon_answers(i, port), START_TIMEOUT_S, f"{node}'s node cache")
    client = cluster.api_client()
    try:
        core = kubernetes.client.CoreV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        kubernetes.client.AppsV1Api(client).create_namespaced_deployment(
            NAMESPACE, inference_fleet(published, port, replicas=4)
        )
        v1, v2 = published.ids["v1"], published.ids["v2"]
        custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, modeldeployment(published, v1)
        )

        def healthy_on(version: str) -> Any:
            status = md_status(custom, "tiny-serving")
            ok = status.get("phase") == "Healthy" and status.get("stableVersion") == version
            return ok and status.get("updatedPods") == 4 and status

        wait_for(lambda: healthy_on(v1), START_TIMEOUT_S, "Healthy on v1", operator.log)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, "tiny-serving", {"spec": {"version": v2}}
        )
        wait_for(lambda: healthy_on(v2), START_TIMEOUT_S, "Healthy on v2", operator.log)

        pods = [
            p
            for p in core.list_namespaced_pod(NAMESPACE, label_selector="app=tiny-fleet").items
            if p.metadata.deletion_timestamp is None
        ]
        by_node: dict[str, list[Any]] = {}
        for pod in pods:
            by_node.setdefault(pod.spec.node_name, []).append(view(core, pod.metadata.name))
        assert sorted(by_node) == list(NODES) and all(len(v) == 2 for v in by_node.values())
        everything = published.anchor_bytes("v1") + published.delta_bytes("v2")
        for index, node in enumerate(NODES, start=1):
            views = by_node[node]
            for pod_view in views:  # bit-exact: the engine holds exactly v2's tensors
                assert engine_checksum(pod_view)["version"] == v2
            metrics = [agent_metrics(v) for v in views]
            from_store = sum(m["deltaroll_agent_downloaded_bytes_total"] for m in metrics)
            from_node = sum(m["deltaroll_agent_node_cache_bytes_total"] for m in metrics)
            # every object once from the store for this node, the second pod's copy from the node
            assert (from_store, from_node) == (everything, everything), node
            daemon = daemon_metrics(index, port)
            assert daemon["deltaroll_node_cache_filled_bytes_total"] == everything
            assert daemon["deltaroll_node_cache_served_bytes_total"] == everything
        # the tenant pods stayed restricted: no hostPath, the node cache reached over the node
        assert not any(v.host_path for p in pods for v in p.spec.volumes or [])
    finally:
        client.close()
        operator.stop()
