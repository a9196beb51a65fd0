"""Pods from a workload's pod template, owned by the workload (Deployments, DaemonSets)."""

from __future__ import annotations

import copy
from typing import Any

from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.store import Obj, Store


def create_owned_pod(
    store: Store,
    pods: ResourceType,
    owner: Obj,
    kind: str,
    generate_name: str,
    labels: dict[str, str],
    spec_overrides: dict[str, Any] | None = None,
) -> Obj:
    """Create a pod of ``owner``'s template, named ``<generate_name><random>``, with ``labels``
    added and ``spec_overrides`` set, controlled by ``owner`` (an ``apps/v1`` ``kind``)."""
    meta = owner["metadata"]
    template = copy.deepcopy(owner["spec"]["template"])
    pod_meta = template.get("metadata") or {}
    pod_meta.pop("name", None)
    pod_meta["generateName"] = generate_name
    pod_meta.setdefault("labels", {}).update(labels)
    pod_meta["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": kind,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    template["metadata"] = pod_meta
    template.setdefault("spec", {}).update(spec_overrides or {})
    return store.create(pods, meta["namespace"], {"apiVersion": "v1", "kind": "Pod", **template})
