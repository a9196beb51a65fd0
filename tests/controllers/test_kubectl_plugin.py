"""``kubectl-deltaroll`` as a subprocess against the sandbox's API: each verb sets the request
annotation the controller acts on, ``status`` reports the rollout and each pod (live with
``--watch``), and mistakes are one ``error:`` line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from deltaroll.controllers.pod_defaults import container_security_context, pod_security_context
from deltaroll_sandbox.polling import wait_for
from deltaroll_sandbox.testing import RunningSandbox, kubectl_binary

GROUP, VERSION, PLURAL = "deltaroll.dev", "v1alpha1", "modeldeployments"
PLUGIN = Path(sys.executable).parent / "kubectl-deltaroll"


def run(cluster: RunningSandbox, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [str(PLUGIN), *args], env=env or cluster.env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


@pytest.fixture
def custom(cluster: RunningSandbox) -> Any:
    client = cluster.api_client()
    api = kubernetes.client.CustomObjectsApi(client)
    for namespace in ("default", "ml"):
        if namespace != "default":
            kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "qwen3", "namespace": namespace},
            "spec": {
                "model": "qwen3",
                "store": {"uri": "file:///tmp/store"},
                "version": "v2",
                "selector": {"matchLabels": {"app": "llm"}},
                "engine": {"kind": "vllm"},
                "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
            },
        })  # fmt: skip
    yield api
    client.close()


def annotations(custom: Any, namespace: str = "default") -> dict[str, str]:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "qwen3")
    return {
        k: v for k, v in (body["metadata"].get("annotations") or {}).items()
        if k in ("deltaroll.dev/promote", "deltaroll.dev/abort", "deltaroll.dev/retry")
    }  # fmt: skip


def test_verbs_set_the_request_annotations(cluster: RunningSandbox, custom: Any) -> None:
    done = run(cluster, "promote", "qwen3", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "name": "qwen3", "namespace": "default", "annotation": "deltaroll.dev/promote",
        "value": "step",
    }  # fmt: skip
    assert annotations(custom) == {"deltaroll.dev/promote": "step"}
    assert run(cluster, "promote", "qwen3", "--full").returncode == 0
    assert annotations(custom)["deltaroll.dev/promote"] == "full"
    assert run(cluster, "rollback", "qwen3").returncode == 0
    assert annotations(custom)["deltaroll.dev/abort"] == "rollback"
    assert run(cluster, "abort", "qwen3", "-n", "ml").returncode == 0
    assert run(cluster, "retry", "qwen3", "-n", "ml").returncode == 0
    in_ml = annotations(custom, "ml")
    assert set(in_ml) == {"deltaroll.dev/abort", "deltaroll.dev/retry"}
    assert in_ml["deltaroll.dev/abort"].endswith("Z")  # a timestamp: each request is new
    # spec is never touched: GitOps owns it
    body = custom.get_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, "qwen3")
    assert body["spec"]["version"] == "v2" and body["metadata"]["generation"] == 1


def test_status_reports_what_the_controller_wrote(cluster: RunningSandbox, custom: Any) -> None:
    status = {
        "phase": "Paused", "message": "step 2/2: paused until `kubectl deltaroll promote`",
        "stableVersion": "v1", "canaryVersion": "v2", "currentStepIndex": 1, "totalPods": 4,
        "updatedPods": 1, "readyPods": 4, "observedGeneration": 1,
        "analysisResults": [{"templateName": "loss", "phase": "Running", "successful": 1}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "RolloutPaused",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }  # fmt: skip
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "qwen3", {"status": status}
    )
    shown = run(cluster, "status", "qwen3", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["phase"], report["canaryVersion"], report["steps"]) == ("Paused", "v2", 2)
    assert report["upToDate"] is True
    human = run(cluster, "status", "qwen3")
    assert "Step:         1/2" in human.stdout
    assert "Pods:         4 total, 1 updated, 4 ready" in human.stdout
    assert "Analysis:     loss (background) Running" in human.stdout


def test_mistakes_are_one_error_line(cluster: RunningSandbox, custom: Any, tmp_path: Path) -> None:
    missing = run(cluster, "promote", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: modeldeployment nope not found in namespace default; "
        "`kubectl get modeldeployments -n default` lists them"
    ]
    no_cluster = run(
        cluster, "status", "qwen3", env={**cluster.env(), "KUBECONFIG": str(tmp_path / "absent")}
    )
    assert no_cluster.returncode == 1
    assert no_cluster.stderr.startswith("error: no usable kubeconfig")
    assert len(no_cluster.stderr.strip().splitlines()) == 1


def test_kubectl_finds_the_plugin(cluster: RunningSandbox, custom: Any) -> None:
    """``kubectl deltaroll ...`` runs the console script found on PATH, as kubectl plugins do."""
    env = {**cluster.env(), "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [kubectl_binary(), "deltaroll", "promote", "qwen3", "--full", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["value"] == "full"
    assert annotations(custom) == {"deltaroll.dev/promote": "full"}


def inference_pod(name: str, agent_state: str) -> dict[str, Any]:
    """A pod the qwen3 selector picks, carrying what an agent reports (and passing the
    namespace's Pod Security "restricted")."""
    return {
        "metadata": {
            "name": name, "labels": {"app": "llm"},
            "annotations": {
                "deltaroll.dev/version": "v2", "deltaroll.dev/agent-state": agent_state,
            },
        },
        "spec": {"securityContext": pod_security_context(), "containers": [{
            "name": "engine", "image": "ignored",
            "command": ["python", "-c", "import time; time.sleep(600)"],
            "securityContext": container_security_context(),
        }]},
    }  # fmt: skip


def test_status_lists_each_pod(cluster: RunningSandbox, custom: Any) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod("default", inference_pod("qwen3-0", "Pulling: fetching"))
    core.create_namespaced_pod("default", {**inference_pod("other", "Ready"), "metadata": {
        "name": "other", "labels": {"app": "web"}}})  # fmt: skip
    shown = run(cluster, "status", "qwen3", "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["pods"]
    assert (row["name"], row["wants"], row["agentState"]) == ("qwen3-0", "v2", "Pulling")
    table = run(cluster, "status", "qwen3").stdout.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == [
        "POD",
        "WANTS",
        "SERVES",
        "AGENT",
        "READY",
        "PAUSED",
        "LAST",
        "CHANGE",
    ]
    assert table[1].split()[:4] == ["qwen3-0", "v2", "-", "Pulling"]


def test_status_watch_shows_each_change_until_ctrl_c(cluster: RunningSandbox, custom: Any) -> None:
    """--watch prints the state again on every change the watch API reports; Ctrl-C (SIGINT)
    ends it quietly with exit status 0."""
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    watcher = subprocess.Popen(
        [str(PLUGIN), "status", "qwen3", "--watch", "--json"], env=cluster.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: seen.extend(json.loads(line) for line in watcher.stdout or ()), daemon=True
    )
    reader.start()
    try:
        wait_for(lambda: seen and seen[-1]["pods"] == [], what="the first rendering")
        core.create_namespaced_pod("default", inference_pod("qwen3-0", "Pulling"))
        wait_for(lambda: [p["name"] for p in seen[-1]["pods"]] == ["qwen3-0"], what="the pod")
        core.patch_namespaced_pod(
            "qwen3-0", "default", {"metadata": {"annotations": {
                "deltaroll.dev/agent-state": "Applying: 1 delta"}}},
        )  # fmt: skip
        wait_for(lambda: seen[-1]["pods"][0]["agentState"] == "Applying", what="the new state")
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, "qwen3", {"status": {"phase": "Paused"}}
        )
        wait_for(lambda: seen[-1]["phase"] == "Paused", what="the new phase")
    finally:
        # the signal state it runs with, should it not end (it once hung under pytest-xdist)
        state = Path(f"/proc/{watcher.pid}/status").read_text() if watcher.poll() is None else ""
        watcher.send_signal(signal.SIGINT)
        try:
            _, stderr = watcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            watcher.kill()
            masks = [line for line in state.splitlines() if line.startswith("Sig")]
            raise AssertionError(f"--watch did not end on SIGINT; {masks}") from None
    assert watcher.returncode == 0 and stderr == ""
