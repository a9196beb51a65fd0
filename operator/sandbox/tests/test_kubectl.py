"""The real kubectl against the sandbox: get, describe, apply, patch, annotate, delete, get -w."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from sandbox_helpers import MANIFESTS, pod_manifest

from deltaroll_sandbox.polling import wait_for
from deltaroll_sandbox.testing import kubectl_binary

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_custom_resources(sandbox):
    k = sandbox.kubectl
    assert "created" in k("apply", "-f", str(MANIFESTS / "widgets-crd.yaml")).stdout
    assert (
        "widget.sandbox.deltaroll.dev/w1 created"
        in k("apply", "-f", str(MANIFESTS / "widget.yaml")).stdout
    )
    table = k("get", "widgets").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE"] and table[1].split() == [
        "w1",
        "3",
    ]  # printer columns
    shown = yaml.safe_load(k("get", "wdg", "w1", "-o", "yaml").stdout)
    assert shown["spec"] == {"size": 3, "maxSize": 10, "color": "green"}  # defaulted by the schema
    assert "unchanged" in k("apply", "-f", str(MANIFESTS / "widget.yaml")).stdout
    assert (
        "patched" in k("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":4}}').stdout
    )
    assert "annotated" in k("annotate", "widget", "w1", "team=ml").stdout
    described = k("describe", "widget", "w1").stdout
    assert "team: ml" in described and "Size:      4" in described
    invalid = k(
        "patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":"big"}}', check=False
    )
    assert invalid.returncode != 0 and "spec.size" in invalid.stderr
    typo = k(
        "apply",
        "-f",
        "-",
        input=(MANIFESTS / "widget.yaml").read_text() + "  colour: red\n",
        check=False,
    )
    assert (
        typo.returncode != 0 and 'unknown field "spec.colour"' in typo.stderr
    )  # --validate=strict
    assert 'widget.sandbox.deltaroll.dev "w1" deleted' in k("delete", "widget", "w1").stdout
    assert "No resources found" in k("get", "widgets").stderr


@pytest.mark.skipif(not REPO_CRDS.is_dir(), reason="the project's crds/ folder does not exist yet")
def test_project_crds_and_examples(sandbox):
    """The project's CRDs served for real: its examples apply, its invalid examples are refused
    (schemas, patterns, CEL rules incl. transition rules, unknown fields)."""
    k = sandbox.kubectl
    applied = k("apply", "-f", str(REPO_CRDS)).stdout
    assert applied.count("created") == len(list(REPO_CRDS.glob("*.yaml")))
    k("apply", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: inference\n")
    valid = []
    for example in sorted(REPO_EXAMPLES.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
        if docs and all(str(d.get("apiVersion", "")).startswith("deltaroll.dev/") for d in docs):
            assert "created" in k("apply", "-f", str(example)).stdout
            valid.append(example)
    assert valid, "no example of our own kinds to apply"
    invalid = sorted((REPO_EXAMPLES / "invalid").glob("*.yaml"))
    for example in invalid:
        refused = k("apply", "-f", str(example), check=False)
        assert refused.returncode != 0, example.name
        assert "is invalid" in refused.stderr or "unknown field" in refused.stderr, refused.stderr


def test_get_watch_streams_changes(sandbox):
    sandbox.kubectl("apply", "-f", str(MANIFESTS / "widgets-crd.yaml"))
    sandbox.kubectl("apply", "-f", str(MANIFESTS / "widget.yaml"))
    watcher = subprocess.Popen(
        [
            kubectl_binary(),
            "--kubeconfig",
            str(sandbox.kubeconfig_path),
            "get",
            "widgets",
            "-w",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    objects: list[dict] = []

    def read() -> None:
        assert watcher.stdout is not None
        buffer = ""
        for line in watcher.stdout:
            buffer += line
            if line.startswith("}"):
                objects.append(json.loads(buffer))
                buffer = ""

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: objects)  # the initial state
        sandbox.kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":7}}')
        wait_for(lambda: any(o["spec"]["size"] == 7 for o in objects))
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_pods_and_jobs(sandbox):
    k = sandbox.kubectl
    assert "job.batch/hello created" in k("apply", "-f", str(MANIFESTS / "job.yaml")).stdout
    k("wait", "--for=condition=complete", "job/hello", "--timeout=120s")
    assert k("logs", "job/hello").stdout == "hello from a job\n"
    pods = k("get", "pods", "-l", "job-name=hello").stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[1:4] == ["0/1", "Completed", "0"]
    wide = k("get", "pods", "-l", "job-name=hello", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[4:7] == ["AGE", "IP", "NODE"] and wide[1].split()[5:7] == [
        "127.0.0.1",
        "deltaroll-sandbox",
    ]
    described = k("describe", "job", "hello").stdout
    assert "1 Succeeded" in described
    assert k("get", "jobs").stdout.splitlines()[1].split()[1:3] == ["Complete", "1/1"]
    k("delete", "-f", str(MANIFESTS / "job.yaml"))
    wait_for(lambda: "No resources found" in k("get", "pods").stderr)


def test_run_annotate_and_delete_a_pod(sandbox):
    k = sandbox.kubectl
    k(
        "run",
        "sleeper",
        "--image=ignored",
        "--restart=Always",
        "--command",
        "--",
        "python",
        "-c",
        "import time; time.sleep(600)",
    )
    k("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
    assert "annotated" in k("annotate", "pod", "sleeper", "deltaroll.dev/version=v2").stdout
    described = k("describe", "pod", "sleeper").stdout
    assert "deltaroll.dev/version: v2" in described
    assert "Successfully assigned default/sleeper to deltaroll-sandbox" in described  # the events
    assert "Started container sleeper" in described
    assert "Started" in k("get", "events").stdout
    assert "deleted" in k("delete", "pod", "sleeper").stdout  # waits for the pod to go
    wait_for(lambda: not sandbox.live_pids())


def test_get_pods_counts_native_sidecars(sandbox):
    """READY counts a native sidecar as kube-apiserver does: in the total, and once started and
    ready in the ready count (kubectl says 2/2, where counting containers alone says 1/1)."""
    sleep = "import time; time.sleep(600)"

    def pod(name: str, sidecar_ready: bool | None) -> dict:
        spec: dict = {"restartPolicy": "Always"}
        if sidecar_ready is not None:
            sidecar = {
                "name": "agent",
                "image": "ignored",
                "restartPolicy": "Always",
                "command": ["python", "-c", sleep],
            }
            if not sidecar_ready:
                sidecar["readinessProbe"] = {"exec": {"command": ["false"]}, "periodSeconds": 1}
            spec["initContainers"] = [sidecar]
        return pod_manifest(name, sleep, **spec)

    for manifest in (pod("plain", None), pod("ready-sidecar", True), pod("unready-sidecar", False)):
        sandbox.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    expected = {
        "plain": ["1/1", "Running", "0"],
        "ready-sidecar": ["2/2", "Running", "0"],
        "unready-sidecar": ["1/2", "Running", "0"],
    }

    def shown() -> dict[str, list[str]]:
        rows = sandbox.kubectl("get", "pods").stdout.splitlines()[1:]
        return {row.split()[0]: row.split()[1:4] for row in rows}

    wait_for(
        lambda: shown() == expected,
        what=f"kubectl get pods to show {expected}",
        log=lambda: sandbox.kubectl("get", "pods").stdout,
    )


def test_deployments_apply_rollout_and_scale(sandbox):
    k = sandbox.kubectl
    manifest = (MANIFESTS / "deployment.yaml").read_text()
    assert "deployment.apps/engine created" in k("apply", "-f", "-", input=manifest).stdout
    k("rollout", "status", "deployment/engine", "--timeout=120s")
    assert k("get", "deployment", "engine").stdout.splitlines()[1].split()[1:4] == ["2/2", "2", "2"]
    # A changed template rolls the pods over (a strategic patch keeps the container's other fields).
    assert (
        "configured"
        in k("apply", "-f", "-", input=manifest.replace("value: one", "value: two")).stdout
    )
    k("rollout", "status", "deployment/engine", "--timeout=120s")
    pods = json.loads(k("get", "pods", "-l", "app=engine", "-o", "json").stdout)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2
    assert all(
        p["spec"]["containers"][0]["env"] == [{"name": "MODE", "value": "two"}] for p in live
    )
    assert "scaled" in k("scale", "deployment/engine", "--replicas=1").stdout
    wait_for(
        lambda: (
            len(json.loads(k("get", "pods", "-l", "app=engine", "-o", "json").stdout)["items"]) == 1
        )
    )


def test_kubectl_create_speaks_protobuf(sandbox):
    """kubectl's typed `create` commands send protobuf; the sandbox reads it for these kinds."""
    k = sandbox.kubectl
    assert "namespace/team-a created" in k("create", "namespace", "team-a").stdout
    k("create", "configmap", "c", "--from-literal=a=b", "--from-literal=x=y z", "-n", "team-a")
    k("create", "secret", "generic", "s", "--from-literal=k=v", "-n", "team-a")
    assert json.loads(k("get", "cm", "c", "-n", "team-a", "-o", "jsonpath={.data}").stdout) == {
        "a": "b",
        "x": "y z",
    }
    secret = json.loads(k("get", "secret", "s", "-n", "team-a", "-o", "json").stdout)
    assert secret["data"] == {"k": "dg=="} and secret["type"] == "Opaque"
    refused = k("create", "job", "j", "--image=x", "--", "true", check=False)
    assert refused.returncode != 0 and "kubectl apply -f" in refused.stderr


REPO_CHART = Path(__file__).resolve().parents[2] / "charts" / "deltaroll"


def _helm() -> str | None:
    found = shutil.which("helm")
    local = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "helm"
    return found or (str(local) if local.exists() else None)


@pytest.mark.slow
@pytest.mark.skipif(not REPO_CHART.is_dir() or _helm() is None, reason="no chart or no helm")
def test_helm_installs_and_uninstalls_the_chart(sandbox):
    """Helm v4 (server-side apply, release Secrets, protobuf deletes) against the sandbox."""

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(_helm()), *args], env=sandbox.env(), capture_output=True, text=True, timeout=120
        )

    installed = helm(
        "install",
        "dr",
        str(REPO_CHART),
        "-n",
        "deltaroll",
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    )
    assert installed.returncode == 0, installed.stderr
    assert "deployed" in helm("list", "-n", "deltaroll").stdout
    uninstalled = helm("uninstall", "dr", "-n", "deltaroll", "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    wait_for(
        lambda: "No resources found" in sandbox.kubectl("get", "pods", "-n", "deltaroll").stderr
    )
