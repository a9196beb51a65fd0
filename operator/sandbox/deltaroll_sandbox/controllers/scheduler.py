"""The sandbox's scheduler: binds each pod without a node to one, as kube-scheduler does.

A pod that names ``spec.schedulerName`` other than ``default-scheduler`` is left to its own
scheduler. Placement is :func:`~deltaroll_sandbox.controllers.placement.choose_node`. A pod
that fits nowhere gets ``PodScheduled=False`` (reason ``Unschedulable``, the scheduler's
message) and a ``FailedScheduling`` Warning, and is tried again whenever a node or a pod changes.
A bound pod gets a ``Scheduled`` Event, and the kubelet of its node runs it.
"""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver.store import PODS, Obj, Store, WatchEvent, now_rfc3339
from deltaroll_sandbox.controllers import events, informers
from deltaroll_sandbox.controllers.placement import choose_node

NODES = ("", "nodes")
SCHEDULER_NAME = "default-scheduler"


class Scheduler:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.pods = informers.resource(store, "", "v1", "pods")
        self.nodes = informers.resource(store, "", "v1", "nodes")
        self._unschedulable: dict[str, str] = {}  # pod uid -> the message it was given

    async def run(self) -> None:
        async for event in informers.events(self.store, {PODS, NODES}):
            informers.guarded(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        if event.key == PODS and event.type == "DELETED":
            self._unschedulable.pop(event.obj["metadata"]["uid"], None)
        if event.key == PODS and event.type == "ADDED" and _waiting(event.obj):
            self._schedule(event.obj)
        else:  # a node, or a place on one, may have changed: try the pods still waiting
            for pod in self.store.list_objects(self.pods, None, _waiting):
                self._schedule(pod)

    def _schedule(self, seen: Obj) -> None:
        meta = seen["metadata"]
        pod = self.store.find(self.pods, meta["namespace"], meta["name"])
        if pod is None or pod["metadata"]["uid"] != meta["uid"] or not _waiting(pod):
            return  # an event about an older version: it is placed already, or gone
        nodes = self.store.list_objects(self.nodes, None)
        placement = choose_node(pod, nodes, self.store.list_objects(self.pods, None))
        if placement.node is None:
            if self._unschedulable.get(meta["uid"]) != placement.message:
                self._unschedulable[meta["uid"]] = placement.message
                self._mark_unschedulable(pod, placement.message)
            return
        node = placement.node
        self._unschedulable.pop(meta["uid"], None)

        def bind(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = node

        self.store.mutate(self.pods, meta["namespace"], meta["name"], bind)
        events.record(
            self.store,
            {"apiVersion": "v1", "kind": "Pod", **pod},
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
            component=SCHEDULER_NAME,
        )

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        meta = pod["metadata"]

        def update(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            conditions = [
                c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"
            ]
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": now_rfc3339(),
                }
            )
            status["conditions"] = conditions

        self.store.mutate(self.pods, meta["namespace"], meta["name"], update, subresource="status")
        events.record(
            self.store,
            {"apiVersion": "v1", "kind": "Pod", **pod},
            "FailedScheduling",
            message,
            "Warning",
            component=SCHEDULER_NAME,
        )


def _waiting(pod: Obj) -> bool:
    """A pod this scheduler still has to place."""
    spec = pod.get("spec", {})
    return (
        not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
        and (pod.get("status") or {}).get("phase") in (None, "Pending")
    )
