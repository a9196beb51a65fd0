"""Events the sandbox's components post about objects, so that ``kubectl describe`` and
``kubectl get events`` tell the story as on a cluster."""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver.store import Store, now_rfc3339
from deltaroll_sandbox.controllers import informers


def record(
    store: Store,
    obj: dict[str, Any],
    reason: str,
    message: str,
    kind: str = "Normal",
    *,
    component: str,
    host: str | None = None,
) -> None:
    """Post one core/v1 Event about ``obj``; nothing once its namespace is gone."""
    events = informers.resource(store, "", "v1", "events")
    meta = obj["metadata"]
    if store.find(informers.resource(store, "", "v1", "namespaces"), "", meta["namespace"]) is None:
        return
    now = now_rfc3339()
    source = {"component": component, **({"host": host} if host else {})}
    store.create(
        events,
        meta["namespace"],
        {
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
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
            "source": source,
            "reportingComponent": component,
            "reportingInstance": host or component,
        },
    )
