"""What the agent may do to the API, and the admission policy that confines it to its own pod.

RBAC cannot name "the pod this token belongs to", so the agent's Role covers its namespace's pods
(:data:`AGENT_ROLE_RULES`) and a ValidatingAdmissionPolicy narrows every write it makes: only the
pod its token is bound to (kube-apiserver puts the pod's name and uid into the user's ``extra``
for a pod-bound ServiceAccount token), only the annotations of :data:`AGENT_ANNOTATIONS`, only the
:data:`~deltaroll.api.annotations.WEIGHTS_READY_CONDITION` in status. The chart renders the same
objects (``charts/deltaroll/templates/agent-rbac.yaml``; tests/chart checks they agree), and the
sandbox evaluates them for the tests and the demo.
"""

from __future__ import annotations

from typing import Any, Final

from deltaroll.api.annotations import (
    POD_AGENT_STATE,
    POD_CURRENT_VERSION,
    POD_LAST_CHANGE,
    POD_PEER_PORT,
    WEIGHTS_READY_CONDITION,
)

AGENT_SERVICE_ACCOUNT: Final = "deltaroll-agent"
AGENT_ANNOTATIONS: Final = (POD_CURRENT_VERSION, POD_AGENT_STATE, POD_PEER_PORT, POD_LAST_CHANGE)
"""The annotations the agent writes on its own pod (``deltaroll.agent.report``)."""
POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
NODE_NAME_EXTRA: Final = "authentication.kubernetes.io/node-name"
"""What kube-apiserver puts into a pod-bound token's user extra (also answered by TokenReview)."""

AGENT_ROLE_RULES: Final = (
    # get: waiting for Ready to follow the readiness gate; patch: its annotations; list: the
    # peers of its ModelDeployment (a label selector, read-only; no watch)
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
)

AGENT_CLUSTER_RULES: Final = (
    # create: ask the API server whose pod-bound token a peer showed (TokenReview); it reads no
    # object and grants nothing: a TokenReview only answers for a token the caller already has
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
)
"""The one cluster-wide right of the agent, for its peer server (``--peers``)."""

# Metadata the API server itself moves on every write; everything else must stay as it was.
_SERVER_METADATA = ("annotations", "resourceVersion", "managedFields", "generation")


def _quoted(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def policy_variables() -> list[dict[str, str]]:
    return [
        {"name": "allowed", "expression": _quoted(AGENT_ANNOTATIONS)},
        {
            "name": "new",
            "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}",
        },
        {
            "name": "old",
            "expression": (
                "has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}"
            ),
        },
        {
            "name": "newStatus",
            "expression": "has(object.status) ? object.status : {}",
        },
        {
            "name": "oldStatus",
            "expression": "has(oldObject.status) ? oldObject.status : {}",
        },
    ]


def policy_validations() -> list[dict[str, str]]:
    """Each a CEL rule over ``request``, ``object`` and ``oldObject`` (always an UPDATE)."""
    own_pod = (
        f"'{POD_NAME_EXTRA}' in request.userInfo.extra"
        f" && request.userInfo.extra['{POD_NAME_EXTRA}'] == [object.metadata.name]"
        f" && '{POD_UID_EXTRA}' in request.userInfo.extra"
        f" && request.userInfo.extra['{POD_UID_EXTRA}'] == [object.metadata.uid]"
    )
    annotations = (
        "variables.new.all(k, k in variables.allowed"
        " || (k in variables.old && variables.old[k] == variables.new[k]))"
        " && variables.old.all(k, k in variables.allowed || k in variables.new)"
    )
    metadata = (
        f"object.metadata.all(k, k in {_quoted(_SERVER_METADATA)}"
        " || (k in oldObject.metadata && oldObject.metadata[k] == object.metadata[k]))"
        f" && oldObject.metadata.all(k, k in {_quoted(_SERVER_METADATA)}"
        " || k in object.metadata)"
    )
    others = f"c.type != '{WEIGHTS_READY_CONDITION}'"
    status = (
        "variables.newStatus.all(k, k == 'conditions'"
        " || (k in variables.oldStatus && variables.oldStatus[k] == variables.newStatus[k]))"
        " && variables.oldStatus.all(k, k == 'conditions' || k in variables.newStatus)"
        " && (has(object.status.conditions) ? object.status.conditions : [])"
        f".filter(c, {others})"
        " == (has(oldObject.status.conditions) ? oldObject.status.conditions : [])"
        f".filter(c, {others})"
    )
    return [
        {
            "expression": own_pod,
            "messageExpression": (
                "'the Deltaroll agent may change only its own pod, not ' + object.metadata.name"
            ),
            "reason": "Forbidden",
        },
        {
            "expression": annotations,
            "message": (
                "the Deltaroll agent may change only the annotations "
                + ", ".join(AGENT_ANNOTATIONS)
            ),
            "reason": "Forbidden",
        },
        {
            "expression": f"{metadata} && object.spec == oldObject.spec",
            "message": "the Deltaroll agent may not change a pod's spec, labels or other metadata",
            "reason": "Forbidden",
        },
        {
            "expression": status,
            "message": (
                f"the Deltaroll agent may change only the {WEIGHTS_READY_CONDITION} condition "
                "in a pod's status"
            ),
            "reason": "Forbidden",
        },
    ]


def agent_user(namespace_expression: str, service_account: str) -> str:
    return f"'system:serviceaccount:' + {namespace_expression} + ':{service_account}'"


def admission_policy(name: str, service_account: str = AGENT_SERVICE_ACCOUNT) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) for ``service_account``
    in every namespace its binding selects."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": ["pods", "pods/status"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "the-agent",
                    "expression": "request.userInfo.username == "
                    + agent_user("request.namespace", service_account),
                }
            ],
            "variables": policy_variables(),
            "validations": [
                {
                    "expression": "request.operation == 'UPDATE'",
                    "message": "the Deltaroll agent may not create or delete pods",
                    "reason": "Forbidden",
                },
                *policy_validations(),
            ],
        },
    }


def admission_binding(name: str, policy: str, namespaces: list[str]) -> dict[str, Any]:
    """Its binding: deny, in ``namespaces`` (the inference namespaces)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": policy,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": list(namespaces),
                        }
                    ]
                }
            },
        },
    }


def agent_role(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [dict(rule) for rule in AGENT_ROLE_RULES],
    }


def agent_access_objects(
    namespace: str, prefix: str = "deltaroll", service_account: str = AGENT_SERVICE_ACCOUNT
) -> list[dict[str, Any]]:
    """Everything the chart installs for the agent in one namespace, as the sandbox applies it:
    ServiceAccount, Role, RoleBinding, the TokenReview right of its peer server, the policy and
    its binding."""
    role = f"{prefix}-agent"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace},
            "automountServiceAccountToken": False,
        },
        agent_role(role, namespace),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [
                {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{role}-token-reviews"},
            "rules": [dict(rule) for rule in AGENT_CLUSTER_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{role}-token-reviews-{namespace}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{role}-token-reviews",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
            ],
        },
        admission_policy(f"{prefix}-agent-own-pod", service_account),
        admission_binding(f"{prefix}-agent-own-pod", f"{prefix}-agent-own-pod", [namespace]),
    ]
