"""What the chart renders is safe to install into namespaces that enforce Pod Security
"restricted", and grants nothing broad: every pod template (of any kind that has one) passes the
sandbox's port of kube-apiserver's checker, no (Cluster)Role has a wildcard, and the default
install grants no Secret cluster-wide."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from chart.test_chart import CHART, NAMESPACE, VALUES, helm, render
from deltaroll_sandbox.apiserver.pod_security.standards import LevelVersion, describe, evaluate

RESTRICTED = LevelVersion("restricted")


def pod_templates(documents: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every object that makes pods, as the admission plugin finds
    them: Pods themselves, ``spec.template`` (Deployments, DaemonSets, StatefulSets, Jobs...) and
    ``spec.jobTemplate.spec.template`` (CronJobs)."""
    found = []
    for document in documents:
        spec = document.get("spec") or {}
        template = (
            {"metadata": document.get("metadata"), "spec": spec}
            if document["kind"] == "Pod"
            else spec.get("template")
            or ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        )
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            found.append((f"{document['kind']}/{document['metadata']['name']}", template))
    return found


@pytest.mark.parametrize("values", VALUES)
def test_every_pod_template_passes_restricted(values: str) -> None:
    templates = pod_templates(render(values))
    assert [name for name, _ in templates] == ["Deployment/" + _operator_name(values)]
    for name, template in templates:
        failures = evaluate(RESTRICTED, template.get("metadata") or {}, template["spec"])
        assert failures == [], f"{name}: {describe(failures)}"


def _operator_name(values: str) -> str:
    return "deltaroll-operator" if values == "all-options" else "deltaroll"


def test_a_weakened_operator_pod_is_caught() -> None:
    """The check can fail: drop the seccomp profile (the schema allows it) and it says so."""
    done = helm(
        "template", "deltaroll", str(CHART), "-n", NAMESPACE,
        "--set", "podSecurityContext.seccompProfile=null",
    )  # fmt: skip
    ((name, template),) = pod_templates(tuple(d for d in yaml.safe_load_all(done.stdout) if d))
    assert describe(evaluate(RESTRICTED, {}, template["spec"])) == (
        'seccompProfile (pod or container "operator" must set securityContext.seccompProfile.type '
        'to "RuntimeDefault" or "Localhost")'
    )


def _wildcards(rule: dict[str, Any]) -> list[str]:
    return [
        f"{field}: *"
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
        if any("*" in str(item) for item in rule.get(field) or [])  # "*", "pods/*"...
    ]


@pytest.mark.parametrize("values", VALUES)
def test_no_role_has_a_wildcard(values: str) -> None:
    roles = [d for d in render(values) if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role.get("rules") or []:
            assert _wildcards(rule) == [], (role["metadata"]["name"], rule)


@pytest.mark.parametrize("values", ["default", "all-options"])
def test_no_cluster_role_grants_secrets_unless_cluster_scope_is_chosen(values: str) -> None:
    def grants_secrets(values: str) -> list[str]:
        return [
            d["metadata"]["name"]
            for d in render(values)
            if d["kind"] == "ClusterRole"
            for rule in d.get("rules") or []
            if "secrets" in rule.get("resources", []) and "" in rule.get("apiGroups", [])
        ]

    assert grants_secrets(values) == []
    assert grants_secrets("cluster") == ["deltaroll-cluster"]  # the explicit choice does
