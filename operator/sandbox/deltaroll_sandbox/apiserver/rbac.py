"""RBAC authorization, as kube-apiserver's RBAC authorizer decides a resource request.

A request is allowed when a rule of a Role bound in the request's namespace (RoleBinding) or a
ClusterRole bound there or cluster-wide (ClusterRoleBinding) matches its verb, API group,
resource (``pods/status`` for a subresource) and, when the rule names any, the object's name.
The admin (``system:masters``) is allowed everything, as on a cluster; nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deltaroll_sandbox.apiserver.identity import UserInfo
from deltaroll_sandbox.apiserver.statuses import ApiError

RBAC = "rbac.authorization.k8s.io"


def verb_of(method: str, named: bool, watching: bool) -> str:
    """kube-apiserver's request verb for an HTTP method on a resource URL."""
    if method in ("GET", "HEAD"):
        return "watch" if watching else ("get" if named else "list")
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())


def _matches(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)  # type: ignore[operator]


def _subject_is(subject: dict[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.username
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.username == f"system:serviceaccount:{namespace}:{name}"
    return False


def _rules(store: Any, user: UserInfo, namespace: str | None) -> Iterator[dict[str, Any]]:
    registry = store.registry
    roles = registry.lookup(RBAC, "v1", "roles")
    cluster_roles = registry.lookup(RBAC, "v1", "clusterroles")
    scopes: list[tuple[Any, str | None]] = [
        (registry.lookup(RBAC, "v1", "clusterrolebindings"), None)
    ]
    if namespace:
        scopes.append((registry.lookup(RBAC, "v1", "rolebindings"), namespace))
    for bindings, scope in scopes:
        for binding in store.list_objects(bindings, scope):
            where = binding["metadata"].get("namespace", "")
            if not any(_subject_is(s, user, where) for s in binding.get("subjects") or []):
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "Role" and scope:
                role = store.find(roles, scope, ref.get("name", ""))
            elif ref.get("kind") == "ClusterRole":
                role = store.find(cluster_roles, "", ref.get("name", ""))
            else:
                role = None
            yield from (role or {}).get("rules") or []


def authorize(
    store: Any,
    user: UserInfo,
    verb: str,
    group: str,
    plural: str,
    subresource: str | None,
    namespace: str | None,
    name: str | None,
) -> None:
    """Raise 403 Forbidden, worded as kube-apiserver words it, unless RBAC allows the request."""
    if user.is_admin:
        return
    resource = f"{plural}/{subresource}" if subresource else plural
    for rule in _rules(store, user, namespace):
        if (
            _matches(rule.get("verbs"), verb)
            and _matches(rule.get("apiGroups"), group)
            and _matches(rule.get("resources"), resource)
            and (not rule.get("resourceNames") or (name or "") in rule["resourceNames"])
        ):
            return
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    about = f'{plural}.{group} "{name}"' if group else f'{plural} "{name}"'
    if not name:
        about = f"{plural}.{group}" if group else plural
    raise ApiError(
        status=403,
        reason="Forbidden",
        message=(
            f'{about} is forbidden: User "{user.username}" cannot {verb} resource "{resource}" '
            f'in API group "{group}"{where}'
        ),
        details={"name": name or "", "group": group, "kind": plural},
    )
