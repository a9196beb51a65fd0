"""The ``scale`` subresource of Deployments (``kubectl scale``): an ``autoscaling/v1`` Scale
view of ``spec.replicas`` that reads and writes the Deployment itself."""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver import patches
from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.statuses import bad_request
from deltaroll_sandbox.apiserver.store import DEPLOYMENTS, Obj, Store

SCALABLE = {DEPLOYMENTS}


def _selector_text(selector: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))


def view(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": _selector_text(obj["spec"].get("selector") or {}),
        },
    }


def write(
    store: Store,
    rtype: ResourceType,
    namespace: str,
    name: str,
    method: str,
    content_type: str,
    body: Any,
) -> Obj:
    """Apply a PUT or PATCH of the Scale to the object's ``spec.replicas``."""
    current = view(store.get(rtype, namespace, name))
    if method == "PUT":
        wanted = body
    elif content_type.startswith("application/json-patch"):
        wanted = patches.json_patch(current, body)
    else:
        wanted = patches.merge_patch(current, body)
    replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
    if not isinstance(replicas, int) or replicas < 0:
        raise bad_request("spec.replicas of a Scale must be a non-negative integer")

    def set_replicas(obj: Obj) -> None:
        obj["spec"]["replicas"] = replicas

    updated = store.mutate(rtype, namespace, name, set_replicas)
    assert updated is not None  # read just above, in the same synchronous step
    return view(updated)
