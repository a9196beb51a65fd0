"""Who may do what: bearer tokens, pod-bound ServiceAccount tokens (TokenRequest), RBAC, and
ValidatingAdmissionPolicies with their bindings, as kube-apiserver answers them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from deltaroll_sandbox.kubelet.pod import pod_dir
from deltaroll_sandbox.polling import wait_for
from deltaroll_sandbox.testing import RunningSandbox

Http = Callable[..., requests.Response]
MERGE = {"Content-Type": "application/merge-patch+json"}
NS = "default"
POLICY = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "own-pod"},
    "spec": {
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["UPDATE"],
                    "resources": ["pods", "pods/status"],
                }
            ]
        },
        "matchConditions": [
            {
                "name": "agents",
                "expression": "request.userInfo.username == "
                "'system:serviceaccount:' + request.namespace + ':agent'",
            }
        ],
        "variables": [
            {
                "name": "me",
                "expression": "request.userInfo.extra["
                + ("'authentication.kubernetes.io/pod-name']"),
            }
        ],
        "validations": [
            {
                "expression": "variables.me == [object.metadata.name]",
                "messageExpression": "'not your pod: ' + object.metadata.name",
                "reason": "Forbidden",
            },
            {"expression": "!has(object.metadata.labels) || !('evil' in object.metadata.labels)"},
        ],
    },
}
BINDING = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicyBinding",
    "metadata": {"name": "own-pod-here"},
    "spec": {
        "policyName": "own-pod",
        "validationActions": ["Deny"],
        "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}
        },
    },
}


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]},
    }


def make(http: Http, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = http("POST", path, json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()  # type: ignore[no-any-return]


@pytest.fixture
def world(http: Http) -> dict[str, Any]:
    """ServiceAccount ``agent`` allowed (RBAC) to patch the namespace's pods; pods a and b."""
    make(http, f"/api/v1/namespaces/{NS}/serviceaccounts", {"metadata": {"name": "agent"}})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}"
    rule = {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get", "patch"]}
    make(http, f"{rbac}/roles", {"metadata": {"name": "agent"}, "rules": [rule]})
    make(
        http,
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": "agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": NS}],
        },
    )
    return {name: make(http, f"/api/v1/namespaces/{NS}/pods", pod(name)) for name in "ab"}


def token_for(
    http: Http,
    bound: dict[str, Any] | None,
    account: str = "agent",
    audiences: list[str] | None = None,
) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if audiences is not None:
        spec["audiences"] = audiences
    if bound is not None:
        meta = bound["metadata"]
        spec["boundObjectRef"] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": meta["name"],
            "uid": meta["uid"],
        }
    path = f"/api/v1/namespaces/{NS}/serviceaccounts/{account}/token"
    reply = http("POST", path, json={"apiVersion": "authentication.k8s.io/v1", "spec": spec})
    assert reply.status_code == 201, reply.text
    return reply.json()["status"]["token"]  # type: ignore[no-any-return]


def annotate(http: Http, name: str, token: str | None, **annotations: str) -> requests.Response:
    body = {"metadata": {"annotations": annotations}}
    return http("PATCH", f"/api/v1/namespaces/{NS}/pods/{name}", token, json=body, headers=MERGE)


def test_anonymous_and_unknown_tokens_are_refused(http: Http) -> None:
    anonymous = http("GET", f"/api/v1/namespaces/{NS}/pods", None)
    assert anonymous.status_code == 403
    assert anonymous.json()["message"] == (
        'forbidden: User "system:anonymous" cannot get path "/api/v1/namespaces/default/pods"'
    )
    assert http("GET", "/version", None).status_code == 200
    unknown = http("GET", f"/api/v1/namespaces/{NS}/pods", "not-a-token")
    assert (unknown.status_code, unknown.json()["reason"]) == (401, "Unauthorized")


def test_a_service_account_gets_what_its_role_binds_and_nothing_else(
    http: Http, world: dict[str, Any]
) -> None:
    token = token_for(http, world["a"])
    assert http("GET", f"/api/v1/namespaces/{NS}/pods/b", token).status_code == 200
    listed = http("GET", f"/api/v1/namespaces/{NS}/pods", token)
    assert listed.status_code == 403
    assert listed.json()["message"] == (
        'pods is forbidden: User "system:serviceaccount:default:agent" cannot list resource '
        '"pods" in API group "" in the namespace "default"'
    )
    deleted = http("DELETE", f"/api/v1/namespaces/{NS}/pods/b", token)
    assert deleted.status_code == 403
    assert 'cannot delete resource "pods"' in deleted.json()["message"]
    secrets = http("GET", f"/api/v1/namespaces/{NS}/secrets", token)
    assert secrets.status_code == 403


def test_a_policy_keeps_a_pod_bound_token_to_its_own_pod(http: Http, world: dict[str, Any]) -> None:
    token = token_for(http, world["a"])
    assert annotate(http, "b", token, x="1").status_code == 200  # RBAC alone: any pod
    make(http, "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", POLICY)
    make(http, "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", BINDING)

    refused = annotate(http, "b", token, x="2")
    assert refused.status_code == 403
    status = refused.json()
    expected = (
        "ValidatingAdmissionPolicy 'own-pod' with binding 'own-pod-here' denied request: "
        "not your pod: b"
    )
    assert status["message"] == f'pods "b" is forbidden: {expected}'
    assert (status["reason"], status["details"]["causes"]) == ("Forbidden", [{"message": expected}])
    assert annotate(http, "a", token, x="2").status_code == 200
    condition = {"status": {"conditions": [{"type": "x/ready", "status": "True"}]}}
    path = f"/api/v1/namespaces/{NS}/pods/b/status"
    assert http("PATCH", path, token, json=condition, headers=MERGE).status_code == 403
    path = f"/api/v1/namespaces/{NS}/pods/a/status"
    assert http("PATCH", path, token, json=condition, headers=MERGE).status_code == 200

    labelled = http(
        "PATCH",
        f"/api/v1/namespaces/{NS}/pods/a",
        token,
        json={"metadata": {"labels": {"evil": "1"}}},
        headers=MERGE,
    )
    assert labelled.status_code == 422  # no reason given: Invalid
    assert labelled.json()["message"].endswith(
        "denied request: failed expression: "
        "!has(object.metadata.labels) || !('evil' in object.metadata.labels)"
    )
    # the policy matches the agent only: the admin still changes any pod
    assert annotate(http, "b", "deltaroll-sandbox", x="3").status_code == 200


def test_a_token_without_a_pod_and_a_deleted_pods_token_are_refused(
    http: Http, world: dict[str, Any]
) -> None:
    make(http, "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", POLICY)
    make(http, "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", BINDING)
    unbound = token_for(http, None)
    refused = annotate(http, "a", unbound, x="1")
    assert refused.status_code == 422
    assert "resulted in error" in refused.json()["message"]  # no pod-name in extra
    bound = token_for(http, world["a"])
    http("DELETE", f"/api/v1/namespaces/{NS}/pods/a?gracePeriodSeconds=0")
    assert http("GET", f"/api/v1/namespaces/{NS}/pods/b", bound).status_code == 401


def test_the_kubelet_mounts_a_pod_bound_token_and_the_ca(
    sandbox: RunningSandbox, http: Http, world: dict[str, Any]
) -> None:
    volume = {
        "name": "api",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }
    body = pod("c")
    body["spec"].update(
        serviceAccountName="agent", automountServiceAccountToken=False, volumes=[volume]
    )
    body["spec"]["containers"][0].update(
        command=["sleep", "60"], volumeMounts=[{"name": "api", "mountPath": "/var/run/secrets/x"}]
    )
    created = make(http, f"/api/v1/namespaces/{NS}/pods", body)
    folder = pod_dir(sandbox.directory, created) / "volumes" / "api"
    wait_for(lambda: (folder / "token").exists(), 30, "the projected token")
    token = (folder / "token").read_text()
    assert (folder / "ca.crt").read_text() == (sandbox.directory / "pki" / "ca.crt").read_text()
    assert (folder / "namespace").read_text() == NS
    assert http("GET", f"/api/v1/namespaces/{NS}/pods/c", token).status_code == 200  # its own
    assert http("GET", f"/api/v1/namespaces/{NS}/pods", token).status_code == 403


def test_a_token_review_answers_for_the_audience_asked(http: Http, world: dict[str, Any]) -> None:
    wait_for(lambda: http("GET", f"/api/v1/namespaces/{NS}/pods/a").json()["spec"].get("nodeName"))
    token = token_for(http, world["a"], audiences=["node-cache"])
    reviews = "/apis/authentication.k8s.io/v1/tokenreviews"

    def review(audiences: list[str] | None, caller: str | None = "") -> requests.Response:
        spec: dict[str, Any] = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        return http("POST", reviews, *([caller] if caller != "" else []), json=body)

    answer = review(["node-cache"])
    assert answer.status_code == 201, answer.text
    status = answer.json()["status"]
    assert status["authenticated"] is True and status["audiences"] == ["node-cache"]
    assert status["user"]["username"] == f"system:serviceaccount:{NS}:agent"
    assert status["user"]["extra"] == {
        "authentication.kubernetes.io/pod-name": ["a"],
        "authentication.kubernetes.io/pod-uid": [world["a"]["metadata"]["uid"]],
        "authentication.kubernetes.io/node-name": ["deltaroll-sandbox"],
    }
    # the API's own audience: not this token; and the token opens nothing in the API
    assert review(None).json()["status"]["authenticated"] is False
    assert http("GET", f"/api/v1/namespaces/{NS}/pods", token).status_code == 401
    # reviewing tokens takes RBAC: the agent's own API token may not
    refused = review(["node-cache"], token_for(http, world["a"]))
    assert refused.status_code == 403
    assert "tokenreviews" in refused.json()["message"]
