"""Events the kubelet posts about pods (Scheduled, Started, BackOff, Killing, Failed), so that
``kubectl describe pod`` tells the story as on a cluster."""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver.store import Store, now_rfc3339
from deltaroll_sandbox.controllers import informers
from deltaroll_sandbox.kubelet.node import NODE_NAME


def record(
    store: Store, pod: dict[str, Any], reason: str, message: str, kind: str = "Normal"
) -> None:
    """Post one core/v1 Event about ``pod``; a pod that is already gone gets none."""
    events = informers.resource(store, "", "v1", "events")
    meta = pod["metadata"]
    if store.find(informers.resource(store, "", "v1", "namespaces"), "", meta["namespace"]) is None:
        return
    now = now_rfc3339()
    store.create(
        events,
        meta["namespace"],
        {
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "kubelet", "host": NODE_NAME},
            "reportingComponent": "kubelet",
            "reportingInstance": NODE_NAME,
        },
    )
