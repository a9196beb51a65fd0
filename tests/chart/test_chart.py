"""The Helm chart, checked with real tools: `helm lint --strict`, `helm template`, and
kubernetes-validate's strict schemas for every rendered object."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "deltaroll"
ALL_OPTIONS = REPO / "examples" / "values-all-options.yaml"
KUBERNETES_VERSIONS = ["1.36.0", "1.37.0"]
NAMESPACE = "deltaroll-system"
VALUES = {
    "default": [],
    "all-options": ["-f", str(ALL_OPTIONS)],
    "cluster": ["--set", "rbac.scope=cluster"],
}
# Kinds no Kubernetes schema covers; each is checked by a test of its own below.
NOT_CORE = {"ServiceMonitor", "KopfPeering", "ClusterKopfPeering"}


def tool(name: str) -> str:
    found = shutil.which(name) or REPO / ".tools" / "bin" / name
    if not Path(found).exists():
        pytest.fail(f"{name} not found on PATH or in .tools/bin: run `make setup`")
    return str(found)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": os.devnull, "HELM_CACHE_HOME": "/tmp/helm-cache"}
    return subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, check=check, env=env
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses duplicate keys, which plain YAML loading (and kubectl) silently merges."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = [key for key, count in Counter(keys).items() if count > 1]
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}")
        return super().construct_mapping(node, deep=deep)


@cache
def render(values: str) -> tuple[dict[str, Any], ...]:
    done = helm(
        "template", "deltaroll", str(CHART), "-n", NAMESPACE, "--include-crds", *VALUES[values]
    )
    return tuple(d for d in yaml.load_all(done.stdout, Loader=_UniqueKeyLoader) if d)


def objects(values: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in render(values) if d["kind"] == kind]


def the(values: str, kind: str) -> dict[str, Any]:
    (found,) = objects(values, kind)
    return found


@pytest.mark.parametrize("values", VALUES)
def test_helm_lint_strict(values: str) -> None:
    done = helm("lint", "--strict", str(CHART), *VALUES[values], check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUES)
def test_every_manifest_passes_kubernetes_validate(values: str, version: str) -> None:
    kinds = Counter(d["kind"] for d in render(values))
    assert kinds["CustomResourceDefinition"] == 2 and kinds["Deployment"] == 1
    for document in render(values):
        if document["kind"] in NOT_CORE:
            continue
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("values", VALUES)
def test_operator_pod_is_locked_down(values: str) -> None:
    pod = the(values, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["command"] == ["deltaroll", "operator", "run"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = next(a for a in container["args"] if a.startswith("--liveness="))
    assert liveness == f"--liveness=http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "metrics" in ports
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DELTAROLL_METRICS_PORT"] == str(ports["metrics"])
    assert env["DELTAROLL_WORKER_IMAGE"] and env["DELTAROLL_AGENT_IMAGE"]


@pytest.mark.parametrize("values", VALUES)
def test_the_signing_key_reaches_the_operator_alone(values: str) -> None:
    """all-options names a signing-key Secret: it is mounted read-only into the operator's
    container and named by DELTAROLL_SIGNING_KEY; the kubelet mounts it, so the operator's Secret
    rights stay `get`. Without the value, no key and no volume."""
    pod = the(values, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    if values != "all-options":
        assert "DELTAROLL_SIGNING_KEY" not in env and secrets == {}
        return
    assert secrets == {
        "signing-key": {
            "secretName": "deltaroll-signing-key",
            "defaultMode": 0o440,
            "items": [{"key": "private.pem", "path": "private.pem"}],
        }
    }
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "signing-key"]
    assert mount == {"name": "signing-key", "mountPath": "/etc/deltaroll/signing", "readOnly": True}
    assert env["DELTAROLL_SIGNING_KEY"] == "/etc/deltaroll/signing/private.pem"
    for role in _operator_roles(values, "Role"):
        assert _rules(role)[("", "secrets")] == {"get"}


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs; fails on any wildcard."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource) and "*" not in rule["verbs"], rule
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


OPERATOR_RULES = {
    ("deltaroll.dev", "modeldeltas"): {"get", "list", "watch", "patch"},
    ("deltaroll.dev", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("deltaroll.dev", "modeldeltas/status"): {"get", "patch"},
    ("deltaroll.dev", "modeldeployments/status"): {"get", "patch"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete", "patch"},
    ("", "pods"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create", "patch"},
    ("", "secrets"): {"get"},
}
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
AGENT_RULES = {("", "pods"): {"get", "list", "patch"}, ("", "pods/status"): {"patch"}}


def _operator_roles(values: str, kind: str) -> list[dict[str, Any]]:
    return [
        r
        for r in objects(values, kind)
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]


def test_cluster_scope_rbac_is_exact() -> None:
    (cluster_role,) = _operator_roles("cluster", "ClusterRole")
    assert _rules(cluster_role) == {
        **OPERATOR_RULES,
        **CRD_RULES,
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
        ("", "namespaces"): {"list", "watch"},
    }
    assert _operator_roles("cluster", "Role") == []
    (binding,) = _operator_roles("cluster", "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert (
        binding["subjects"][0]["name"]
        == the("cluster", "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    )
    args = the("cluster", "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "--standalone" in args


@pytest.mark.parametrize("values", ["default", "all-options"])
def test_namespace_scope_is_the_default_and_its_rbac_is_exact(values: str) -> None:
    """The release's namespace plus those listed: a Role each, nothing cluster-wide but CRDs."""
    listed = (
        yaml.safe_load(ALL_OPTIONS.read_text())["watchNamespaces"] if values != "default" else []
    )
    watched = [NAMESPACE, *listed]
    (cluster_role,) = _operator_roles(values, "ClusterRole")
    assert _rules(cluster_role) == CRD_RULES
    roles = _operator_roles(values, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for role in roles:
        assert _rules(role) == {
            **OPERATOR_RULES,
            ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
        }
    bindings = _operator_roles(values, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
    args = the(values, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={n}" for n in watched
    ]
    assert "--all-namespaces" not in args
    if values == "all-options":
        assert "--peering=deltaroll" in args
        peerings = objects(values, "KopfPeering")
        assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(watched)


@pytest.mark.parametrize("values", VALUES)
def test_agent_identity(values: str) -> None:
    agent_roles = [
        r
        for r in objects(values, "Role")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
    ]
    assert agent_roles
    for role in agent_roles:
        assert _rules(role) == AGENT_RULES
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"])
        for a in objects(values, "ServiceAccount")
    }
    for binding in objects(values, "RoleBinding"):
        if binding["metadata"]["labels"]["app.kubernetes.io/component"] == "agent":
            (subject,) = binding["subjects"]
            assert (subject["namespace"], subject["name"]) in accounts


def test_the_agent_identity_follows_the_watched_namespaces() -> None:
    """One value for the usual install: the operator's Role and the agent's identity go to the
    inference namespace; the agent gets none in the operator's own namespace."""
    done = helm(
        "template", "deltaroll", str(CHART), "-n", NAMESPACE, "--set", "watchNamespaces={inference}"
    )
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    placed: dict[tuple[str, str], set[str]] = {}
    for d in rendered:
        if d["kind"] in ("Role", "ServiceAccount"):
            key = (d["kind"], d["metadata"]["labels"]["app.kubernetes.io/component"])
            placed.setdefault(key, set()).add(d["metadata"]["namespace"])
    assert placed == {
        ("Role", "operator"): {NAMESPACE, "inference"},
        ("Role", "agent"): {"inference"},
        ("ServiceAccount", "operator"): {NAMESPACE},
        ("ServiceAccount", "agent"): {"inference"},
    }


def test_service_monitor_scrapes_the_metrics_service() -> None:
    assert objects("default", "ServiceMonitor") == []
    monitor = the("all-options", "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = the("all-options", "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    pod = the("all-options", "Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_chart_crds_are_the_generated_ones() -> None:
    rendered = {d["metadata"]["name"] for d in objects("default", "CustomResourceDefinition")}
    assert rendered == {"modeldeltas.deltaroll.dev", "modeldeployments.deltaroll.dev"}


@pytest.mark.parametrize(
    "setting",
    [
        "rbac.scope=everything",
        "replicaCount=-1",
        "securityContext.allowPrivilegeEscalation=true",
        "podSecurityContext.runAsNonRoot=false",
        "logging.format=xml",
        "metrics.port=0",
        "networkPolicy.port=0",
        "networkPolicy.clients[0].everyone=true",
        "unknownKey=1",
        "signing.existingSecret=Not_A_Name",
        "signing.key=../private.pem",
    ],
)
def test_values_schema_refuses_bad_values(setting: str) -> None:
    done = helm("template", "deltaroll", str(CHART), "--set", setting, check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


def test_notes_tell_the_next_command() -> None:
    done = helm("install", "deltaroll", str(CHART), "-n", NAMESPACE, "--dry-run=client")
    notes = done.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/deltaroll" in notes
    assert "kubectl apply -f examples/modeldelta.yaml" in notes


def _readme_block(marker: str) -> Any:
    text = (CHART / "README.md").read_text()
    match = re.search(rf"<!-- {marker}[^>]*-->\s*```yaml\n(.*?)```", text, re.S)
    assert match, f"the chart README lost its {marker}"
    return yaml.load(match.group(1), Loader=_UniqueKeyLoader)


def _readme_snippet() -> dict[str, Any]:
    return _readme_block("agent-sidecar-snippet")  # type: ignore[no-any-return]


def _sglang_snippet() -> dict[str, Any]:
    """The vLLM Deployment with the SGLang containers and the agent's engine kind."""
    deployment = _readme_snippet()
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"] = _readme_block("sglang-containers-snippet")["containers"]
    (agent,) = pod["initContainers"]
    agent["args"] = ["--engine=sglang" if a == "--engine=vllm" else a for a in agent["args"]]
    return deployment


def _in_memory_snippet(marker: str, kind: str) -> dict[str, Any]:
    """The vLLM Deployment with the engine container of an in-memory snippet (the proxy kept)
    and the agent's env additions."""
    deployment = _sglang_snippet() if kind == "sglang" else _readme_snippet()
    pod = deployment["spec"]["template"]["spec"]
    block = _readme_block(marker)
    (engine,) = block["containers"]
    pod["containers"] = [engine, *(c for c in pod["containers"] if c["name"] != kind)]
    (agent,) = pod["initContainers"]
    agent["env"] = agent["env"] + block.get("agentEnv", [])
    return deployment


def _vllm_in_memory() -> dict[str, Any]:
    return _in_memory_snippet("vllm-inmemory-engine-snippet", "vllm")


def _sglang_in_memory() -> dict[str, Any]:
    return _in_memory_snippet("sglang-inmemory-engine-snippet", "sglang")


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "snippet", [_readme_snippet, _sglang_snippet, _vllm_in_memory, _sglang_in_memory]
)
def test_readme_agent_snippet_is_a_valid_deployment(snippet, version: str) -> None:
    kubernetes_validate.validate(snippet(), version, strict=True)


def test_readme_in_memory_snippets_load_the_extension_the_adapters_call() -> None:
    """The engine flags name the extension's real entry points, and SGLang's engine and agent
    share the request file the adapter and the loader meet at."""
    import importlib

    from deltaroll.api.engine_patch import SGLANG_LOADER, SGLANG_REQUEST_ENV, VLLM_METHOD

    vllm = _container(_vllm_in_memory()["spec"]["template"]["spec"], "vllm")
    (flag,) = [a for a in vllm["args"] if a.startswith("--worker-extension-cls=")]
    module, _, name = flag.partition("=")[2].rpartition(".")
    assert hasattr(getattr(importlib.import_module(module), name), VLLM_METHOD)
    assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in vllm["env"]

    pod = _sglang_in_memory()["spec"]["template"]["spec"]
    sglang = _container(pod, "sglang")
    assert f"--custom-weight-loader={SGLANG_LOADER}" in sglang["args"]
    module, _, name = SGLANG_LOADER.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    (agent,) = pod["initContainers"]
    shared = [
        e["value"] for c in (sglang, agent) for e in c["env"] if e["name"] == SGLANG_REQUEST_ENV
    ]
    assert len(shared) == 2 and shared[0] == shared[1] and shared[0].startswith("/models/")


def test_readme_agent_snippet_wires_the_agent() -> None:
    pod = _readme_snippet()["spec"]["template"]["spec"]
    assert pod["readinessGates"] == [{"conditionType": "deltaroll.dev/weights-ready"}]
    assert pod["serviceAccountName"] == "deltaroll-agent"
    (agent,) = pod["initContainers"]
    assert agent["restartPolicy"] == "Always"
    assert agent["command"] == ["deltaroll"] and agent["args"][:2] == ["agent", "run"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (item,) = volumes["podinfo"]["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == "metadata.annotations"
    annotations_file = next(a for a in agent["args"] if a.startswith("--annotations-file="))
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert annotations_file == f"--annotations-file={mounts['podinfo']}/{item['path']}"
    engine = _container(pod, "vllm")
    engine_mounts = {m["name"]: m["mountPath"] for m in engine["volumeMounts"]}
    assert engine_mounts["weights"] == mounts["weights"]
    assert any(
        arg.startswith("--engine-url=http://127.0.0.1:") for arg in agent["args"]
    )  # the engine's admin routes, on the pod's loopback


def test_readme_vllm_runs_the_disk_backend_in_dev_mode() -> None:
    engine = _container(_readme_snippet()["spec"]["template"]["spec"], "vllm")
    flag = engine["args"].index("--weight-transfer-config")
    assert json.loads(engine["args"][flag + 1]) == {"backend": "disk"}
    assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in engine["env"]
    assert "vLLM 0.27.0 or later" in (CHART / "README.md").read_text()


@pytest.mark.parametrize("values", VALUES)
def test_the_policy_reaches_the_operator_and_parses(values: str) -> None:
    from deltaroll.api.policy import DEFAULT_POLICY, POLICY_ENV, Policy

    configmap = next(
        c for c in objects(values, "ConfigMap") if c["metadata"]["name"].endswith("-policy")
    )
    policy = Policy.model_validate(yaml.safe_load(configmap["data"]["policy.yaml"]))
    pod = the(values, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = next(e["value"] for e in container["env"] if e["name"] == POLICY_ENV)
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    if values == "all-options":
        team = policy.for_namespace("ml-team-a")
        assert team.worker.image == "ghcr.io/acme/deltaroll-worker:1.4.0"
        assert team.worker.resources == policy.default.worker.resources  # inherited
    else:  # values that set no policy
        assert policy == DEFAULT_POLICY  # the chart's defaults are the operator's own


@pytest.mark.parametrize("values", VALUES)
def test_the_agent_policy_is_the_api_contract(values: str) -> None:
    """The chart's ValidatingAdmissionPolicy and binding are the objects api.agent_access
    builds (which the sandbox tests evaluate), for the chart's names and namespaces."""
    from deltaroll.api.agent_access import admission_binding, admission_policy

    policy = the(values, "ValidatingAdmissionPolicy")
    name = policy["metadata"]["name"]
    account = next(
        a["metadata"]["name"]
        for a in objects(values, "ServiceAccount")
        if a["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"
    )
    assert policy["spec"] == admission_policy(name, account)["spec"]
    binding = the(values, "ValidatingAdmissionPolicyBinding")
    namespaces = sorted(
        {
            r["metadata"]["namespace"]
            for r in objects(values, "RoleBinding")
            if r["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
        }
    )
    expected = admission_binding(name, name, namespaces)["spec"]
    values_in = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    values_in["values"] = sorted(values_in["values"])
    assert binding["spec"] == expected


def test_readme_agent_snippet_gives_the_token_to_the_agent_only() -> None:
    pod = _readme_snippet()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (agent,) = pod["initContainers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    tokens = [n for n, v in volumes.items() if "projected" in v and any(
        "serviceAccountToken" in s for s in v["projected"]["sources"])]  # fmt: skip
    assert len(tokens) == 1
    assert tokens[0] in {m["name"] for m in agent["volumeMounts"]}
    for container in pod["containers"]:  # the engine and the proxy
        assert tokens[0] not in {m["name"] for m in container.get("volumeMounts", [])}
    assert "exec" in agent["startupProbe"]  # /healthz on loopback: not a declared port
    from deltaroll.api.peers import DEFAULT_PEER_PORT, PEER_PORT_NAME

    assert agent["ports"] == [{"name": PEER_PORT_NAME, "containerPort": DEFAULT_PEER_PORT}]


@pytest.mark.parametrize(
    ("snippet", "kind"), [(_readme_snippet, "vllm"), (_sglang_snippet, "sglang")]
)
def test_readme_pods_serve_their_port_through_the_proxy_only(snippet, kind: str) -> None:
    """The pod's one port (the Service's, spec.engine.port) is the proxy's, which passes only
    inference to the engine; the engine listens on loopback, where the agent reloads it."""
    import typer

    from deltaroll.cli.main import build_app

    pod = snippet()["spec"]["template"]["spec"]
    (agent,) = pod["initContainers"]
    engine, proxy = pod["containers"]
    ports = [(c["name"], p) for c in pod["containers"] for p in c.get("ports", [])]
    assert ports == [("engine-proxy", {"name": "http", "containerPort": 8000})]
    assert proxy["command"] == ["deltaroll"] and proxy["args"][:2] == ["engine", "proxy"]
    group = typer.main.get_command(build_app())
    command = group.commands["engine"].commands["proxy"]  # type: ignore[attr-defined]
    options = command.make_context("proxy", list(proxy["args"][2:])).params
    assert options["allow"] == kind and not options["allow_route"]
    assert options["listen"] == "0.0.0.0:8000"
    engine_url = next(a for a in agent["args"] if a.startswith("--engine-url="))
    assert (
        engine_url == f"--engine-url={options['upstream']}" == "--engine-url=http://127.0.0.1:8001"
    )
    assert {"--host=127.0.0.1", "--port=8001"} <= set(engine["args"])
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "volumeMounts" not in proxy  # nothing of the pod's: no token, no weights
    security = proxy["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"] and not security["allowPrivilegeEscalation"]


def test_the_inference_network_policy_is_opt_in_and_opens_only_the_inference_port() -> None:
    assert objects("default", "NetworkPolicy") == []
    options = yaml.safe_load(ALL_OPTIONS.read_text())
    policies = objects("all-options", "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == options["agent"]["namespaces"]
    operator_pod = the("all-options", "Deployment")["spec"]["template"]["metadata"]["labels"]
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"] == {"matchLabels": options["networkPolicy"]["podSelector"]}
        assert spec["policyTypes"] == ["Ingress"]
        # the inference port, and the peer port from the inference pods alone: the agent's
        # health port and the rest stay closed
        rule, peers = spec["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": options["networkPolicy"]["port"]}]
        assert peers == {
            "ports": [{"protocol": "TCP", "port": options["networkPolicy"]["peerPort"]}],
            "from": [{"podSelector": spec["podSelector"]}],
        }
        operator, analysis, *clients = rule["from"]
        assert operator["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
        assert operator["podSelector"]["matchLabels"].items() <= operator_pod.items()
        assert analysis == {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "analysis",
                    "app.kubernetes.io/managed-by": "deltaroll",
                }
            }
        }
        assert clients == options["networkPolicy"]["clients"]


def test_the_network_policy_admits_the_analysis_jobs_pods_by_default() -> None:
    from controllers.test_job_pod_security import analysis_job

    done = helm(
        "template", "deltaroll", str(CHART), "-n", NAMESPACE, "--set", "networkPolicy.enabled=true"
    )
    (policy,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"] == {}  # every pod of the namespace
    assert len(policy["spec"]["ingress"]) == 1  # no peer port unless asked for
    admitted = policy["spec"]["ingress"][0]["from"][1]["podSelector"]["matchLabels"]
    pod_labels = analysis_job()["spec"]["template"]["metadata"]["labels"]
    assert admitted.items() <= pod_labels.items()


def test_the_node_cache_is_opt_in_node_local_and_least_privilege() -> None:
    from deltaroll_sandbox.apiserver.pod_security.standards import (
        LevelVersion,
        describe,
        evaluate,
    )

    assert not objects("default", "DaemonSet") and not objects("all-options", "DaemonSet")
    done = helm(
        "template", "deltaroll", str(CHART), "-n", NAMESPACE,
        "--set", "nodeCache.enabled=true", "--set", "nodeCache.namespace=deltaroll-node-cache",
    )  # fmt: skip
    documents = [d for d in yaml.load_all(done.stdout, Loader=_UniqueKeyLoader) if d]
    for document in documents:
        if document["kind"] not in NOT_CORE:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    role = by_kind[("ClusterRole", "deltaroll-node-cache")]
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    daemonset = by_kind[("DaemonSet", "deltaroll-node-cache")]
    assert daemonset["metadata"]["namespace"] == "deltaroll-node-cache"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == ["deltaroll", "agent", "node-cache"]
    assert container["ports"] == [{"name": "node-cache", "containerPort": 8470, "hostPort": 8470}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {e["name"] for e in container["env"]} == {"NODE_NAME", "HOST_IP"}
    assert "--max-bytes=107374182400" in container["args"]
    # its hostPath and hostPort are all that Pod Security "restricted" refuses in it
    assert describe(evaluate(LevelVersion("restricted"), {}, pod)) == (
        'hostPort (container "node-cache" uses hostPort 8470), restricted volume types '
        '(volume "cache" uses restricted volume type "hostPath")'
    )


@pytest.mark.parametrize("values", VALUES)
def test_the_agents_may_review_tokens_and_nothing_else_cluster_wide(values: str) -> None:
    """The peer servers' TokenReviews: the ClusterRole is api.agent_access's rules, bound to
    the agent's ServiceAccount in each of its namespaces and to no one else."""
    from deltaroll.api.agent_access import AGENT_CLUSTER_RULES

    (role,) = [
        r
        for r in objects(values, "ClusterRole")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
    ]
    assert role["rules"] == [dict(rule) for rule in AGENT_CLUSTER_RULES]
    (binding,) = [
        b
        for b in objects(values, "ClusterRoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    namespaces = {
        r["metadata"]["namespace"]
        for r in objects(values, "RoleBinding")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
    }
    assert {(s["namespace"], s["name"]) for s in binding["subjects"]} == {
        (namespace, "deltaroll-agent") for namespace in namespaces
    }
