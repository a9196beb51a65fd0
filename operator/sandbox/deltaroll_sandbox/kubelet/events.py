"""Events the kubelet posts about pods (Scheduled, Started, BackOff, Killing, Failed), so that
``kubectl describe pod`` tells the story as on a cluster."""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver.store import Store
from deltaroll_sandbox.controllers import events


def record(
    store: Store, pod: dict[str, Any], reason: str, message: str, kind: str = "Normal", *, host: str
) -> None:
    """Post one core/v1 Event about ``pod`` from the kubelet of node ``host``; a pod that is
    already gone gets none."""
    about = {"apiVersion": "v1", "kind": "Pod", **pod}
    events.record(store, about, reason, message, kind, component="kubelet", host=host)
