"""The node cache as a user deploys it without the chart: its DaemonSet and the least it needs,
and an inference pod's agent pointed at its node's copy.

Shared by the node-cache sandbox test and benchmarks/fleet.py, so both run what the chart's
``nodeCache`` gives: the daemon may only create TokenReviews and keeps its hostPath in a
namespace of its own; the tenant pod keeps no hostPath and reaches the daemon at
``status.hostIP`` with a pod-bound token for the cache's audience.
"""

from __future__ import annotations

from typing import Any, Final

from deltaroll.api.node_cache import AUDIENCE
from deltaroll_demo.manifests import SERVICE_ACCOUNT_MOUNT, agent_token_volume

SYSTEM: Final = "deltaroll-system"
NODE_CACHE_MOUNT: Final = "/var/run/deltaroll/node-cache"
HOST_CACHE: Final = "/var/lib/deltaroll/node-cache"


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def node_cache_objects(port: int) -> list[dict[str, Any]]:
    """The DaemonSet and the least it needs: create tokenreviews, nothing else; its hostPath."""
    labels = {"app": "deltaroll-node-cache"}
    token_volume = {**agent_token_volume(for_peers=False), "name": "token"}  # API token, CA
    container = {
        "name": "node-cache",
        "image": "ghcr.io/deltaroll/agent:0.1.0",
        "command": ["deltaroll"],
        "args": [
            "agent",
            "node-cache",
            "--dir=/cache",
            f"--port={port}",
            "--fill-ttl=30",
            f"--service-account-dir={SERVICE_ACCOUNT_MOUNT}",
            "--log-format=console",
        ],  # fmt: skip
        "env": [field_env("NODE_NAME", "spec.nodeName"), field_env("HOST_IP", "status.hostIP")],
        "ports": [{"name": "cache", "containerPort": port, "hostPort": port}],
        "volumeMounts": [
            {"name": "cache", "mountPath": "/cache"},
            {"name": "token", "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True},
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "node-cache", "namespace": SYSTEM},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "deltaroll-node-cache"},
            "rules": [
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["tokenreviews"],
                    "verbs": ["create"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "deltaroll-node-cache"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "deltaroll-node-cache",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "node-cache", "namespace": SYSTEM}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "deltaroll-node-cache", "namespace": SYSTEM},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "node-cache",
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "cache",
                                "hostPath": {"path": HOST_CACHE, "type": "DirectoryOrCreate"},
                            },
                            token_volume,
                        ],
                    },
                },
            },
        },
    ]


def use_node_cache(spec: dict[str, Any], agent: dict[str, Any], port: int) -> None:
    """Point ``agent`` (a container of the pod ``spec``) at its node's cache on ``port``: the
    node's address from the downward API, a token for the cache's audience in a volume."""
    cache_token = {"path": "token", "audience": AUDIENCE, "expirationSeconds": 3600}
    agent["args"] = [
        *agent["args"],
        f"--node-cache=http://$(HOST_IP):{port}",
        f"--node-cache-token={NODE_CACHE_MOUNT}/token",
    ]
    agent["env"] = [field_env("HOST_IP", "status.hostIP"), *agent["env"]]
    agent["volumeMounts"] = [
        *agent["volumeMounts"],
        {"name": "node-cache-token", "mountPath": NODE_CACHE_MOUNT, "readOnly": True},
    ]
    spec["volumes"] = [
        *spec["volumes"],
        {
            "name": "node-cache-token",
            "projected": {"sources": [{"serviceAccountToken": cache_token}]},
        },
    ]


def spread_over_nodes(spec: dict[str, Any], labels: dict[str, str]) -> None:
    """Spread the pods matching ``labels`` evenly over the nodes (a node cache pays per node)."""
    spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": labels},
        }
    ]
