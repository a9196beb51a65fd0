"""The sandbox's Nodes: each registered by its kubelet as a real kubelet registers its own.

One node (the default) is this machine: its hostPath volumes are the machine's own folders, as
they always were. With several, each node gets a loopback address of its own (``127.0.1.<i>``:
Linux routes all of 127/8 to the loopback device, so a process can bind or reach it) and its own
host filesystem under ``<sandbox>/nodes/<name>/root``, so a ``hostPath`` is node-local as on a
cluster: two pods on one node share it, pods on different nodes do not. Nodes alternate between
two zones (``topology.kubernetes.io/zone``) so zone spread constraints mean something.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deltaroll_sandbox.apiserver.store import Store, now_rfc3339
from deltaroll_sandbox.controllers import informers
from deltaroll_sandbox.errors import SandboxStartError

NODE_NAME: Final = "deltaroll-sandbox"
MAX_NODES: Final = 64
ZONES: Final = ("sandbox-a", "sandbox-b")
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class SandboxNode:
    """One node: its name, its address (``status.hostIP`` of its pods) and its host folders."""

    name: str
    address: str
    zone: str
    host_root: Path

    def host_path(self, path: str) -> Path:
        """Where this node keeps the host folder ``path`` (a hostPath volume's path)."""
        relative = os.path.normpath("/" + path).lstrip("/")  # '..' cannot climb out of the root
        return self.host_root / relative

    @property
    def labels(self) -> dict[str, str]:
        return {HOSTNAME_LABEL: self.name, "kubernetes.io/os": "linux", ZONE_LABEL: self.zone}


def sandbox_nodes(count: int, sandbox_dir: Path) -> list[SandboxNode]:
    """The nodes of a sandbox with ``count`` of them (1: this machine, named as always)."""
    if not 1 <= count <= MAX_NODES:
        raise SandboxStartError(f"--nodes must be between 1 and {MAX_NODES}, not {count}")
    if count == 1:
        return [SandboxNode(NODE_NAME, "127.0.0.1", ZONES[0], Path("/"))]
    return [
        SandboxNode(
            f"{NODE_NAME}-{i}",
            f"127.0.1.{i}",
            ZONES[(i - 1) % len(ZONES)],
            sandbox_dir / "nodes" / f"{NODE_NAME}-{i}" / "root",
        )
        for i in range(1, count + 1)
    ]


def _memory_ki() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024)
    except (ValueError, OSError):
        return 0


def register(store: Store, node: SandboxNode) -> None:
    """Create (or refresh) the Node object with this machine's capacity and a Ready condition."""
    nodes = informers.resource(store, "", "v1", "nodes")
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{_memory_ki()}Ki", "pods": "110"}
    now = now_rfc3339()
    status: dict[str, Any] = {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": node.address},
            {"type": "Hostname", "address": node.name},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the sandbox's kubelet runs pods as local processes",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ],
        "nodeInfo": {  # every field: the official client rejects a NodeSystemInfo without one
            "architecture": platform.machine(),
            "bootID": "",
            "containerRuntimeVersion": "local-processes://",
            "kernelVersion": platform.release(),
            "kubeProxyVersion": "",
            "kubeletVersion": "v1.36.0+deltaroll-sandbox",
            "machineID": "",
            "operatingSystem": "linux",
            "osImage": platform.platform(),
            "systemUUID": "",
        },
    }
    if store.find(nodes, "", node.name) is None:
        store.create(nodes, None, {"metadata": {"name": node.name, "labels": node.labels}})

    def set_status(obj: dict[str, Any]) -> None:
        obj["status"] = status

    store.mutate(nodes, "", node.name, set_status, subresource="status")
