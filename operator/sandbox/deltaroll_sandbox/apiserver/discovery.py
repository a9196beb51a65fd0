"""Discovery documents, as kube-apiserver writes them (kmock's own are close but not enough
for kubectl: it copies short names onto subresources, which makes ``kubectl get ns`` ambiguous,
and orders groups at random, which decides what ``kubectl get pods`` means).
"""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver.resources import ResourceRegistry, ResourceType

#: The Kubernetes minor version (1.x) the sandbox emulates: /version says it, and Pod Security
#: evaluates ``latest`` as this version.
EMULATED_MINOR = 36

# Subresources and the verbs they take (anything else: get).
_SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
}
_ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# The groups a real server lists first; kubectl resolves short names in this order.
_GROUP_ORDER = ["apps", "events.k8s.io", "batch", "apiextensions.k8s.io"]


def _preferred(versions: list[str]) -> str:
    stable = [v for v in versions if "alpha" not in v and "beta" not in v]
    return sorted(stable or versions, reverse=True)[0]


def groups(registry: ResourceRegistry) -> dict[str, Any]:
    """``GET /apis``: every group, core excluded, in a stable order."""
    versions: dict[str, set[str]] = {}
    for rtype in registry:
        if rtype.group:
            versions.setdefault(rtype.group, set()).add(rtype.version)
    order = sorted(
        versions,
        key=lambda g: (_GROUP_ORDER.index(g) if g in _GROUP_ORDER else len(_GROUP_ORDER), g),
    )
    return {
        "apiVersion": "v1",
        "kind": "APIGroupList",
        "groups": [group(registry, g) for g in order],
    }


def group(registry: ResourceRegistry, name: str) -> dict[str, Any]:
    """``GET /apis/<group>``."""
    versions = sorted({t.version for t in registry if t.group == name}, reverse=True)
    preferred = _preferred(versions)
    return {
        "apiVersion": "v1",
        "kind": "APIGroup",
        "name": name,
        "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred},
    }


def _entry(rtype: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rtype.plural,
        "singularName": rtype.singular or rtype.kind.lower(),
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": _ALL_VERBS,
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        entry["categories"] = list(rtype.categories)
    return entry


def resource_list(
    registry: ResourceRegistry, group_name: str, version: str
) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``/apis/<group>/<version>``: resources and their served subresources."""
    rtypes = sorted(
        (t for t in registry if (t.group, t.version) == (group_name, version)),
        key=lambda t: t.plural,
    )
    if not rtypes:
        return None
    resources = []
    for rtype in rtypes:
        resources.append(_entry(rtype))
        for sub in sorted(rtype.subresources & set(_SUBRESOURCE_VERBS)):
            resources.append(
                {
                    "name": f"{rtype.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rtype.namespaced,
                    "kind": "Scale" if sub == "scale" else rtype.kind,
                    "verbs": _SUBRESOURCE_VERBS[sub],
                }
            )
    return {
        "apiVersion": "v1",
        "kind": "APIResourceList",
        "groupVersion": f"{group_name}/{version}" if group_name else version,
        "resources": resources,
    }
