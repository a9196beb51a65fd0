"""A sandbox with several nodes: Node objects, the scheduler, node-local hostPath, addresses."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from sandbox_helpers import pod_manifest

from deltaroll_sandbox.polling import wait_for
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"


@pytest.fixture
def three(tmp_path: Path) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path / "sandbox", nodes=3) as running:
        yield running


@pytest.fixture
def core3(three: RunningSandbox) -> Iterator[kubernetes.client.CoreV1Api]:
    client = three.api_client()
    yield kubernetes.client.CoreV1Api(client)
    client.close()


def _finished(core: kubernetes.client.CoreV1Api, name: str) -> Any:
    return wait_for(
        lambda: (
            (p := core.read_namespaced_pod(name, "default")).status.phase in ("Succeeded", "Failed")
            and p
        ),
        timeout=30,
    )


def _answer(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())
    except OSError:
        return None  # not listening yet


def test_each_node_registers_with_its_own_address_and_zone(core3):
    nodes = {n.metadata.name: n for n in core3.list_node().items}
    assert sorted(nodes) == [f"deltaroll-sandbox-{i}" for i in (1, 2, 3)]
    for name, node in nodes.items():
        assert node.metadata.labels[HOST] == name
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    addresses = {n.status.addresses[0].address for n in nodes.values()}
    assert addresses == {"127.0.1.1", "127.0.1.2", "127.0.1.3"}
    assert {n.metadata.labels[ZONE] for n in nodes.values()} == {"sandbox-a", "sandbox-b"}


def test_hostpath_is_node_local_and_pods_spread_by_constraint(three, core3):
    # running until deleted: a finished pod leaves its place (and the spread's count)
    code = (
        "import os, pathlib, time; d = pathlib.Path('/cache');"
        "(d / os.environ['POD']).write_text('x'); print(os.environ['HOST_IP'], flush=True);"
        "time.sleep(600)"
    )
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": HOST,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "cached"}},
        }
    ]
    env = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    ]
    names = [f"c{i}" for i in range(6)]
    for name in names:
        manifest = pod_manifest(
            name,
            code,
            metadata={"labels": {"app": "cached"}},
            topologySpreadConstraints=spread,
            volumes=[{"name": "cache", "hostPath": {"path": "/var/lib/cache"}}],
            container={"env": env, "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
        )
        core3.create_namespaced_pod("default", manifest)
    pods = {
        name: wait_for(
            lambda n=name: (
                core3.read_namespaced_pod_log(n, "default")
                and core3.read_namespaced_pod(n, "default")
            ),
            timeout=30,
        )
        for name in names
    }
    by_node: dict[str, set[str]] = {}
    for name, pod in pods.items():
        by_node.setdefault(pod.spec.node_name, set()).add(name)
    assert sorted(len(v) for v in by_node.values()) == [2, 2, 2]  # maxSkew 1 over 3 hosts
    addresses = {n.metadata.name: n.status.addresses[0].address for n in core3.list_node().items}
    for node_name, on_node in by_node.items():
        # each node's /var/lib/cache holds the files of its own pods, and only those
        folder = three.directory / "nodes" / node_name / "root" / "var/lib/cache"
        assert {p.name for p in folder.iterdir()} == on_node
        for name in on_node:
            assert pods[name].status.host_ip == addresses[node_name]
            log = core3.read_namespaced_pod_log(name, "default")  # from that node's kubelet
            assert log == f"{addresses[node_name]}\n"


def test_an_unschedulable_pod_waits_until_a_node_fits(core3):
    manifest = pod_manifest("gpu", "print('ran')", nodeSelector={"gpu": "h100"})
    core3.create_namespaced_pod("default", manifest)

    def scheduled() -> Any:
        conditions = core3.read_namespaced_pod("gpu", "default").status.conditions or []
        return next((c for c in conditions if c.type == "PodScheduled"), None)

    condition = wait_for(scheduled)
    assert (condition.status, condition.reason) == ("False", "Unschedulable")
    assert condition.message == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )
    assert core3.read_namespaced_pod("gpu", "default").spec.node_name is None
    core3.patch_node("deltaroll-sandbox-2", {"metadata": {"labels": {"gpu": "h100"}}})
    pod = _finished(core3, "gpu")
    assert (pod.spec.node_name, pod.status.phase) == ("deltaroll-sandbox-2", "Succeeded")
    reasons = [
        e.reason
        for e in core3.list_namespaced_event("default").items
        if e.involved_object.name == "gpu"
    ]
    assert "FailedScheduling" in reasons and "Scheduled" in reasons


def test_a_pod_bound_by_name_runs_on_that_node_only(core3):
    manifest = pod_manifest("pinned", "print('ran')", nodeName="deltaroll-sandbox-3")
    core3.create_namespaced_pod("default", manifest)
    assert _finished(core3, "pinned").status.host_ip == "127.0.1.3"


def test_the_cli_refuses_a_node_count_it_cannot_run(tmp_path):
    # in a process of its own: `up` configures logging for the whole process
    command = "from deltaroll_sandbox.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", command, "up", "--dir", str(tmp_path), "--nodes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: --nodes must be between 1 and 64, not 0\n"


def test_a_daemonset_runs_one_pod_per_selected_node_on_its_host_port(three, core3):
    api = kubernetes.client.AppsV1Api(core3.api_client)
    with socket.socket() as probe:  # a port free now; each node binds it on its own address
        probe.bind(("127.0.1.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = os.environ['NODE'].encode()\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers(); self.wfile.write(body)\n"
        f"http.server.HTTPServer((os.environ['HOST_IP'], {port}), H).serve_forever()\n"
    )
    env = [
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    ]
    template = pod_manifest(
        "ignored",
        code,
        restartPolicy="Always",
        metadata={"labels": {"app": "daemon"}},
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": HOST,
                                    "operator": "NotIn",
                                    "values": ["deltaroll-sandbox-3"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
        container={"env": env, "ports": [{"containerPort": port, "hostPort": port}]},
    )
    del template["apiVersion"], template["kind"]
    daemonset = {
        "metadata": {"name": "daemon"},
        "spec": {"selector": {"matchLabels": {"app": "daemon"}}, "template": template},
    }
    api.create_namespaced_daemon_set("default", daemonset)
    status = wait_for(
        lambda: (
            (s := api.read_namespaced_daemon_set("daemon", "default").status)
            and s.number_ready == 2
            and s
        ),
        timeout=30,
    )
    assert status.desired_number_scheduled == 2
    pods = core3.list_namespaced_pod("default", label_selector="app=daemon").items
    assert sorted(p.spec.node_name for p in pods) == ["deltaroll-sandbox-1", "deltaroll-sandbox-2"]
    for i in (1, 2):  # each node's daemon answers on that node's address only
        assert wait_for(lambda i=i: _answer(f"http://127.0.1.{i}:{port}/")) == (
            f"deltaroll-sandbox-{i}"
        )
    # a deleted pod comes back on its node
    core3.delete_namespaced_pod(pods[0].metadata.name, "default")
    wait_for(
        lambda: (
            len(
                [
                    p
                    for p in core3.list_namespaced_pod("default", label_selector="app=daemon").items
                    if not p.metadata.deletion_timestamp
                ]
            )
            == 2
            and api.read_namespaced_daemon_set("daemon", "default").status.number_ready == 2
        ),
        timeout=30,
    )
