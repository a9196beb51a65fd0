"""What the agents' own-pod admission policy costs the sandbox's API server per PATCH.

Every agent report (an annotation or its readiness condition) is a PATCH of its own pod that the
chart's ValidatingAdmissionPolicy (``deltaroll.api.agent_access``) checks: 1 match condition,
5 variables and 5 validations over the pod before and after. The sandbox's API server is one
Python thread, so at 64 pods and 8 PATCHes per pod and version this was most of its time.

Measured here on one agent PATCH (its state annotation changes) of a pod shaped like
``benchmarks/rollout.py``'s agent-only pod as the sandbox stores it: the sandbox's evaluation
(``deltaroll_sandbox.apiserver.policies``, cel-cpp through ``cel-expr-python``) against the
baseline of the same expressions in the same order through cel-python (the sandbox's CEL before,
the documents converted once per request), in the same run; both must admit the request.

Run: .venv/bin/python benchmarks/admission_policy.py [--requests 200]
Prints one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import celpy

from deltaroll.api.agent_access import AGENT_SERVICE_ACCOUNT, agent_access_objects
from deltaroll_sandbox.apiserver import policies
from deltaroll_sandbox.apiserver.identity import UserInfo, current_user
from deltaroll_sandbox.apiserver.resources import ResourceType
from rollout import NAMESPACE, agent_only_pod_spec

POD = "fleet-7f9c-abcde"
UID = "6a1f0c2e-8d4b-4e51-9b7a-3c2d1e0f9a8b"
PODS = ResourceType(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
WHEN = "2026-12-07T10:00:00Z"


def stored_pod() -> dict[str, Any]:
    """The agent-only pod as the sandbox holds it once its agent is Ready on a version."""
    spec = agent_only_pod_spec("s3://fleet-bench/delta-peers", "http://127.0.0.1:8080")
    spec.update(nodeName="deltaroll-sandbox-3", schedulerName="default-scheduler")
    annotations = {
        "deltaroll.dev/version": "v2",
        "deltaroll.dev/current-version": "aa141dee83cffcc432e15aab33a6a774",
        "deltaroll.dev/agent-state": "Ready",
        "deltaroll.dev/peer-port": "8082",
        "deltaroll.dev/last-change": json.dumps({"method": "disk", "seconds": 0.41}),
    }
    managers = ("kube-controller-manager", "deltaroll-operator", "deltaroll-agent", "kubelet")
    managed = [
        {
            "manager": manager,
            "operation": "Update",
            "apiVersion": "v1",
            "time": WHEN,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{k}": {} for k in annotations}}},
        }
        for manager in managers
    ]
    conditions = (
        "PodScheduled", "Initialized", "ContainersReady", "Ready", "deltaroll.dev/weights-ready"
    )  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD,
            "namespace": NAMESPACE,
            "uid": UID,
            "resourceVersion": "4242",
            "creationTimestamp": WHEN,
            "labels": {"app": "fleet", "pod-template-hash": "7f9c"},
            "annotations": annotations,
            "managedFields": managed,
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "hostIP": "10.200.0.3",
            "podIP": "10.200.0.3",
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": WHEN} for kind in conditions
            ],
            "containerStatuses": [
                {
                    "name": "deltaroll-agent",
                    "ready": True,
                    "restartCount": 0,
                    "image": "deltaroll/agent",
                    "imageID": "",
                    "state": {"running": {"startedAt": WHEN}},
                }
            ],
        },
    }


def agent_patch() -> policies.Request:
    """The agent reporting Pulling: one annotation changes, and the resourceVersion."""
    before = stored_pod()
    after = copy.deepcopy(before)
    after["metadata"]["annotations"]["deltaroll.dev/agent-state"] = "Pulling"
    after["metadata"]["resourceVersion"] = "4243"
    return policies.Request(PODS, "UPDATE", "", NAMESPACE, POD, after, before)


def cel_python_evaluate(spec: dict[str, Any], request: policies.Request) -> bool:
    """The baseline: the policy's expressions in order through cel-python, the documents
    converted to CEL's types once per request; True when every validation admits."""
    env = celpy.Environment()
    documents = {"object": request.obj, "oldObject": request.old, "request": request.as_cel()}
    context = {name: celpy.json_to_cel(value) for name, value in documents.items()}

    def run(expression: str, activation: dict[str, Any]) -> Any:
        return _compiled(env, expression).evaluate(activation)

    if not all(bool(run(c["expression"], context)) for c in spec.get("matchConditions") or []):
        return True
    variables: dict[Any, Any] = {}
    for variable in spec.get("variables") or []:
        scope = {**context, "variables": celpy.celtypes.MapType(dict(variables))}
        variables[celpy.celtypes.StringType(variable["name"])] = run(variable["expression"], scope)
    scope = {**context, "variables": celpy.celtypes.MapType(dict(variables))}
    return all(bool(run(rule["expression"], scope)) for rule in spec["validations"])


_PROGRAMS: dict[str, Any] = {}


def _compiled(env: Any, expression: str) -> Any:
    if expression not in _PROGRAMS:  # compiled once, as both sides do
        _PROGRAMS[expression] = env.program(env.compile(expression))
    return _PROGRAMS[expression]


def ms_per_request(evaluate: Any, requests: int) -> float:
    evaluate()  # compiles
    started = time.perf_counter()
    for _ in range(requests):
        evaluate()
    return (time.perf_counter() - started) / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    (policy,) = (o for o in agent_access_objects(NAMESPACE) if o["kind"].endswith("Policy"))
    spec, request = policy["spec"], agent_patch()
    current_user.set(
        UserInfo(
            username=f"system:serviceaccount:{NAMESPACE}:{AGENT_SERVICE_ACCOUNT}",
            groups=("system:serviceaccounts", "system:authenticated"),
            extra={
                "authentication.kubernetes.io/pod-name": [POD],
                "authentication.kubernetes.io/pod-uid": [UID],
            },
        )
    )
    if policies.refusal(spec, request) is not None or not cel_python_evaluate(spec, request):
        raise SystemExit("the policy refused the agent's own PATCH: the benchmark's pod is wrong")
    cel_cpp_ms = ms_per_request(lambda: policies.refusal(spec, request), args.requests)
    cel_python_ms = ms_per_request(lambda: cel_python_evaluate(spec, request), args.requests)
    expressions = sum(
        len(spec.get(k) or []) for k in ("matchConditions", "variables", "validations")
    )
    result = {
        "benchmark": "admission_policy",
        "expressions": expressions,
        "pod_json_bytes": len(json.dumps(request.old)),
        "requests": args.requests,
        "cel_cpp_ms_per_request": round(cel_cpp_ms, 3),
        "cel_python_ms_per_request": round(cel_python_ms, 3),
        "cel_python_over_cel_cpp": round(cel_python_ms / cel_cpp_ms, 1),
    }
    print(
        f"{expressions} expressions per PATCH of a {result['pod_json_bytes']}-byte pod: "
        f"cel-cpp {cel_cpp_ms:.2f} ms, cel-python {cel_python_ms:.2f} ms"
    )
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
