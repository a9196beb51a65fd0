"""The sandbox's one Node, registered by its kubelet as a real kubelet registers its own."""

from __future__ import annotations

import os
import platform
from typing import Any

from deltaroll_sandbox.apiserver.store import Store, now_rfc3339
from deltaroll_sandbox.controllers import informers

NODE_NAME = "deltaroll-sandbox"


def _memory_ki() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024)
    except (ValueError, OSError):
        return 0


def register(store: Store) -> None:
    """Create (or refresh) the Node object with this machine's capacity and a Ready condition."""
    nodes = informers.resource(store, "", "v1", "nodes")
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{_memory_ki()}Ki", "pods": "110"}
    now = now_rfc3339()
    status: dict[str, Any] = {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": NODE_NAME},
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
    if store.find(nodes, "", NODE_NAME) is None:
        labels = {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"}
        store.create(nodes, None, {"metadata": {"name": NODE_NAME, "labels": labels}})

    def set_status(node: dict[str, Any]) -> None:
        node["status"] = status

    store.mutate(nodes, "", NODE_NAME, set_status, subresource="status")
