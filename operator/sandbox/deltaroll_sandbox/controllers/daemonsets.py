"""A minimal DaemonSet controller: one pod of the current template on every node it selects.

As the real controller does, each pod names its node through a required node affinity on the
node's name (``matchFields`` ``metadata.name``), and the scheduler binds it. A node the
template's nodeSelector or node affinity refuses gets no pod (and loses the one it had); a
deleted or finished pod comes back; a changed template replaces the pods (``RollingUpdate``
with every pod at once: nothing in the sandbox needs the pacing). Status carries the
``desiredNumberScheduled``, ``currentNumberScheduled``, ``numberReady``, ``numberAvailable``,
``updatedNumberScheduled`` and ``observedGeneration`` that ``kubectl rollout status`` reads.
"""

from __future__ import annotations

from deltaroll_sandbox.apiserver.statuses import ApiError
from deltaroll_sandbox.apiserver.store import PODS, Obj, Store, WatchEvent
from deltaroll_sandbox.controllers import events, informers
from deltaroll_sandbox.controllers.deployments import HASH_LABEL, ready, template_hash
from deltaroll_sandbox.controllers.placement import selects
from deltaroll_sandbox.controllers.scheduler import NODES
from deltaroll_sandbox.controllers.templates import create_owned_pod

DAEMONSETS = ("apps", "daemonsets")
COMPONENT = "daemonset-controller"


def node_affinity(node: str) -> dict[str, object]:
    """What the real controller puts in each pod: its node, by name."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


class DaemonSetController:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.daemonsets = informers.resource(store, "apps", "v1", "daemonsets")
        self.pods = informers.resource(store, "", "v1", "pods")
        self.nodes = informers.resource(store, "", "v1", "nodes")

    async def run(self) -> None:
        async for event in informers.events(self.store, {DAEMONSETS, PODS, NODES}):
            informers.guarded(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        if event.key == NODES:  # a node came, went or was relabelled: every DaemonSet may care
            for daemonset in self.store.list_objects(self.daemonsets, None):
                meta = daemonset["metadata"]
                self.reconcile(meta["namespace"], meta["name"])
            return
        informers.reconcile_owner(
            self.store, event, DAEMONSETS, self.daemonsets, self.reconcile,
            unread=informers.NOT_READ_BY_OWNERS,
        )  # fmt: skip

    def reconcile(self, namespace: str, name: str) -> None:
        daemonset = self.store.find(self.daemonsets, namespace, name)
        if daemonset is None or daemonset["metadata"].get("deletionTimestamp"):
            return
        uid = daemonset["metadata"]["uid"]
        current = template_hash(daemonset["spec"]["template"])
        template_pod = {"metadata": {}, "spec": daemonset["spec"]["template"].get("spec", {})}
        wanted = [
            n["metadata"]["name"]
            for n in self.store.list_objects(self.nodes, None)
            if selects(template_pod, n)
        ]
        by_node: dict[str, Obj] = {}
        for pod in self.store.list_objects(self.pods, namespace):
            if informers.controller_uid(pod) != uid or pod["metadata"].get("deletionTimestamp"):
                continue
            finished = pod["status"].get("phase") in ("Succeeded", "Failed")
            outdated = pod["metadata"].get("labels", {}).get(HASH_LABEL) != current
            node = _target_node(pod)
            if finished or outdated or node is None or node not in wanted or node in by_node:
                self.store.delete(self.pods, namespace, pod["metadata"]["name"], "Background")
            else:
                by_node[node] = pod
        for node in wanted:
            if node in by_node:
                continue
            try:
                pod = create_owned_pod(
                    self.store,
                    self.pods,
                    daemonset,
                    "DaemonSet",
                    f"{name}-",
                    {HASH_LABEL: current},
                    {"affinity": node_affinity(node)},
                )
            except ApiError as refused:
                message = f"Error creating: {refused.message}"
                events.record(
                    self.store, daemonset, "FailedCreate", message, "Warning", component=COMPONENT
                )
                break
            by_node[node] = pod
        self._write_status(daemonset, len(wanted), list(by_node.values()))

    def _write_status(self, daemonset: Obj, desired: int, pods: list[Obj]) -> None:
        scheduled = sum(1 for p in pods if p["spec"].get("nodeName"))
        number_ready = sum(1 for p in pods if ready(p))

        def apply(obj: Obj) -> None:
            obj.setdefault("status", {}).update(
                observedGeneration=obj["metadata"].get("generation", 1),
                desiredNumberScheduled=desired,
                currentNumberScheduled=scheduled,
                updatedNumberScheduled=scheduled,
                numberMisscheduled=0,
                numberReady=number_ready,
                numberAvailable=number_ready,
                numberUnavailable=max(0, desired - number_ready),
            )

        meta = daemonset["metadata"]
        self.store.mutate(
            self.daemonsets, meta["namespace"], meta["name"], apply, subresource="status"
        )


def _target_node(pod: Obj) -> str | None:
    """The node a DaemonSet pod is for: where it runs, else the name its affinity requires."""
    if pod["spec"].get("nodeName"):
        return str(pod["spec"]["nodeName"])
    required = (
        (pod["spec"].get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
    )
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return None
