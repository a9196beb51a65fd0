"""A minimal Deployment controller: keeps ``replicas`` pods of the current template.

Pods are owned directly by their Deployment (no ReplicaSets in between: nothing in the sandbox
needs them) and named ``<deployment>-<template hash>-<random>``, labelled
``pod-template-hash``. A deleted pod comes back; a changed template rolls pods over one at a
time (a new pod first, an old one removed once a new one is Ready); status carries replicas,
readyReplicas, availableReplicas, updatedReplicas, observedGeneration and the Available and
Progressing conditions. A pod the API refuses (Pod Security, say) is a ``FailedCreate``
Warning Event on the Deployment (``Error creating: <the API's message>``); the next change to
the Deployment or its pods tries again (a change to a pod's annotations alone does not: the
controller never reads them, so it skips those writes).
"""

from __future__ import annotations

import hashlib
import json

from deltaroll_sandbox.apiserver.statuses import ApiError
from deltaroll_sandbox.apiserver.store import (
    DEPLOYMENTS,
    PODS,
    Obj,
    Store,
    WatchEvent,
    now_rfc3339,
)
from deltaroll_sandbox.controllers import events, informers
from deltaroll_sandbox.controllers.templates import create_owned_pod

HASH_LABEL = "pod-template-hash"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


def ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


class DeploymentController:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.deployments = informers.resource(store, "apps", "v1", "deployments")
        self.pods = informers.resource(store, "", "v1", "pods")

    async def run(self) -> None:
        async for event in informers.events(self.store, {DEPLOYMENTS, PODS}):
            informers.guarded(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        informers.reconcile_owner(
            self.store, event, DEPLOYMENTS, self.deployments, self.reconcile,
            unread=informers.NOT_READ_BY_OWNERS,
        )  # fmt: skip

    def reconcile(self, namespace: str, name: str) -> None:
        deployment = self.store.find(self.deployments, namespace, name)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        uid = deployment["metadata"]["uid"]
        replicas = int(deployment["spec"].get("replicas", 1))
        current_hash = template_hash(deployment["spec"]["template"])
        pods = [
            p
            for p in self.store.peek_objects(self.pods, namespace)
            if informers.controller_uid(p) == uid
            and not p["metadata"].get("deletionTimestamp")
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
        new = [p for p in pods if p["metadata"].get("labels", {}).get(HASH_LABEL) == current_hash]
        old = [p for p in pods if p not in new]
        for _ in range(replicas - len(new)):
            try:
                new.append(self._create_pod(deployment, current_hash))
            except ApiError as refused:
                message = f"Error creating: {refused.message}"
                events.record(
                    self.store, deployment, "FailedCreate", message, "Warning",
                    component="deployment-controller",
                )  # fmt: skip
                break
        for pod in sorted(new, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)[
            : max(0, len(new) - replicas)
        ]:
            self._delete(namespace, pod)
            new.remove(pod)
        ready_new = sum(1 for p in new if ready(p))
        # Rolling: an old pod goes once a new one is Ready (at once if no old one is Ready).
        removable = (
            max(0, ready_new + len(old) - replicas) if any(ready(p) for p in old) else len(old)
        )
        for pod in old[:removable]:
            self._delete(namespace, pod)
        old = old[removable:]
        self._write_status(deployment, new, old)

    def _delete(self, namespace: str, pod: Obj) -> None:
        if self.store.find(self.pods, namespace, pod["metadata"]["name"]) is not None:
            self.store.delete(self.pods, namespace, pod["metadata"]["name"], "Background")

    def _create_pod(self, deployment: Obj, pod_hash: str) -> Obj:
        return create_owned_pod(
            self.store,
            self.pods,
            deployment,
            "Deployment",
            f"{deployment['metadata']['name']}-{pod_hash}-",
            {HASH_LABEL: pod_hash},
        )

    def _write_status(self, deployment: Obj, new: list[Obj], old: list[Obj]) -> None:
        replicas = int(deployment["spec"].get("replicas", 1))
        ready_count = sum(1 for p in new + old if ready(p))
        available = ready_count >= replicas

        def apply(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            for kind, ok, reason in (
                (
                    "Available",
                    available,
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                ),
                (
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable" if available and not old else "ReplicaSetUpdated",
                ),
            ):
                text = "True" if ok else "False"
                previous = conditions.get(kind)
                if (
                    previous is None
                    or previous.get("status") != text
                    or previous.get("reason") != reason
                ):
                    now = now_rfc3339()
                    conditions[kind] = {
                        "type": kind,
                        "status": text,
                        "reason": reason,
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                    }
            status.update(
                observedGeneration=obj["metadata"].get("generation", 1),
                replicas=len(new) + len(old),
                updatedReplicas=len(new),
                readyReplicas=ready_count,
                availableReplicas=ready_count,
                unavailableReplicas=max(0, replicas - ready_count),
                conditions=list(conditions.values()),
            )

        meta = deployment["metadata"]
        self.store.mutate(
            self.deployments, meta["namespace"], meta["name"], apply, subresource="status"
        )
