"""ModelDeployment rollouts end to end on the sandbox: the real operator (``deltaroll operator
run``), real agents and reference engines as pod processes, a real store, and the
``kubectl-deltaroll`` plugin as a subprocess.

- Two pods: v1 -> v2 runs 25% / pause / analysis / 100% (promoted with the plugin) and ends
  bit-exact with ``deltaroll pull``, never Ready on unverified weights; v2 -> v3, a model broken
  by a huge learning rate, fails its eval analysis on the canary and every pod goes back to v2.
- A Deployment of two pods whose agents are each SIGKILLed once mid-apply: the operator gives
  new pods their version, survives being killed mid-rollout while the canary pod is deleted
  (its replacement gets the canary slot), then promote --full, rollback, retry, and a return to
  a version inside rollbackWindow without canary steps.
- An S3 store (moto) that goes away mid-rollout: the rollout waits, the pods keep serving, and it
  finishes when the store is back.
- Two ModelDeployments selecting one pod: the older keeps it and rolls out; the younger writes
  nothing, says why (Degraded, SelectorOverlap, one Warning), and takes the pod when its labels
  stop matching the older's selector.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from agent.helpers import (
    MODEL,
    NAMESPACE,
    Published,
    S3Server,
    publish_versions,
    subprocess_env,
)
from agent.sandbox_pods import ReadinessRecorder, engine_checksum, inference_pod, view
from controllers.conftest import Operator, wait_for
from controllers.modeldelta_world import create_secret
from deltaroll.api.agent_state import AgentState
from deltaroll.api.annotations import POD_LAST_CHANGE, PROMOTE
from deltaroll.api.conditions import now_rfc3339
from deltaroll.api.weight_change import parse_weight_change
from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store
from deltaroll_sandbox.testing import RunningSandbox
from engines.checkpoints import EVAL_TEXTS, TinyCheckpoints, build_with_one_thread

# each test starts engines that import torch on two busy cores: more than the default 300 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
GROUP, VERSION, PLURAL = "deltaroll.dev", "v1alpha1", "modeldeployments"
BIN = Path(sys.executable).parent
PODS = ("infer-0", "infer-1")
NAME = "tiny-serving"
START_TIMEOUT_S = 300.0  # two engines import torch and transformers on two busy cores


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    llama: TinyCheckpoints = build_with_one_thread(tmp_path_factory.mktemp("llama"))
    root = tmp_path_factory.mktemp("published") / "store"
    publish_versions(Store(f"file://{root}", cache_dir=root.parent / "push-cache"), llama)
    paths = {"v1": llama.v1, "v2": llama.v2, "v3": llama.diverged}
    ids = {label: checkpoint_version(path) for label, path in paths.items()}
    return Published(f"file://{root}", root, paths, ids)


def deployment(published: Published, version: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": MODEL,
            "store": {"uri": published.uri},
            "version": version,
            "selector": {"matchLabels": {"app": "tiny-llm"}},
            "engine": {"kind": "reference", "port": 8000},
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 25},
                        {"pause": {}},
                        {"analysis": {"templates": [{"templateName": "eval-loss"}]}},
                        {"setWeight": 100},
                    ]
                }
            },
            "analysisTemplates": [
                {
                    "name": "eval-loss",
                    "provider": {"http": {"body": json.dumps({"texts": EVAL_TEXTS})}},
                    "successCondition": "result <= baseline * 1.05",
                    "interval": "1s",
                    "count": 2,
                    "consecutiveErrorLimit": 2,
                }
            ],
            "maxUnavailable": 1,
            "progressDeadlineSeconds": 240,
        },
    }


def plugin(cluster: RunningSandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubectl-deltaroll"), *args],
        env=cluster.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def md_status(custom: Any, name: str = NAME) -> dict[str, Any]:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    return dict(body.get("status") or {})


def event_reasons(core: Any, name: str = NAME) -> set[str]:
    """The reasons of the deployment's Events so far (Kopf posts them after the status write)."""
    listed = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}")
    return {e.reason for e in listed.items}


def apis(cluster: RunningSandbox) -> tuple[Any, Any, Any]:
    """An API client of the sandbox, with the core and custom-object APIs on it."""
    client = cluster.api_client()
    return client, kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)


def start_pods(core: Any, store_uri: str, version: str, store_env: dict[str, str]) -> None:
    """The two inference pods of ``deployment``'s selector, started on ``version``."""
    for name in PODS:
        pod = inference_pod(name, store_uri=store_uri, version=version, store_env=store_env)
        pod["metadata"]["labels"] = {"app": "tiny-llm"}
        core.create_namespaced_pod(NAMESPACE, pod)


def wait_phase(
    custom: Any, log: Callable[[], str], wanted: str, says: str = "", **fields: Any
) -> Any:
    """The deployment's status once it is in phase ``wanted`` with the given status fields and a
    message containing ``says`` (the controller writes its message a pass after pods move)."""

    def check() -> Any:
        status = md_status(custom)
        ok = status.get("phase") == wanted and all(status.get(k) == v for k, v in fields.items())
        return status if ok and says in status.get("message", "") else None

    return wait_for(
        check,
        START_TIMEOUT_S,
        f"phase {wanted} {fields} saying {says!r}",
        lambda: json.dumps(md_status(custom)) + "\n" + log(),
    )


def test_canary_to_v2_then_bad_v3_rolled_back(
    cluster: RunningSandbox, operator: Operator, published: Published, tmp_path: Path
) -> None:
    v1, v2, v3 = (published.ids[k] for k in ("v1", "v2", "v3"))
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    recorders = [ReadinessRecorder(core, name) for name in PODS]
    for recorder in recorders:
        recorder.start()
    for name in PODS:
        pod = inference_pod(name, store_uri=published.uri, version=v1, store_env={})
        pod["metadata"]["labels"] = {"app": "tiny-llm"}
        core.create_namespaced_pod(NAMESPACE, pod)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, deployment(published, v1)
    )

    phase = partial(wait_phase, custom, operator.log)

    phase("Healthy", stableVersion=v1)

    # v1 -> v2: 25% is one pod of two, then an indefinite pause
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": v2}}
    )
    paused = phase("Paused", canaryVersion=v2)
    assert paused["currentStepIndex"] == 1
    wanted = [view(core, name).wanted for name in PODS]
    assert sorted(wanted) == sorted([v1, v2])

    shown = plugin(cluster, "status", NAME, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["phase"] == "Paused"
    promoted = plugin(cluster, "promote", NAME, "-n", NAMESPACE)
    assert promoted.returncode == 0, promoted.stderr

    healthy = phase("Healthy", stableVersion=v2)
    (run,) = healthy["analysisResults"]
    assert (run["templateName"], run["phase"], run["successful"]) == ("eval-loss", "Successful", 2)
    assert [h["version"] for h in healthy["history"]][:2] == [v2, v1]
    body = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    assert PROMOTE not in (body["metadata"].get("annotations") or {})  # handled and removed
    pulled = tmp_path / "pulled"
    subprocess.run(
        [str(BIN / "deltaroll"), "pull", published.uri, MODEL, v2, "-o", str(pulled)],
        env=subprocess_env(DELTAROLL_CACHE_DIR=str(tmp_path / "pull-cache")),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert checkpoint_version(pulled) == v2
    for name in PODS:
        pod = view(core, name)
        assert pod.current == v2 and pod.ready == "True"
        assert engine_checksum(pod)["version"] == v2
        # The reference engine took v2 in memory: its agent reports the pause and the bytes.
        annotations = core.read_namespaced_pod(name, NAMESPACE).metadata.annotations or {}
        change = parse_weight_change(annotations.get(POD_LAST_CHANGE))
        assert change is not None and (change.version, change.method) == (v2, "in-memory")
        assert change.bytes_applied > 0
    assert "in-memory" in plugin(cluster, "status", NAME).stdout

    # v2 -> v3 (diverged): the canary's eval loss is far above the stable pods'
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": v3}}
    )
    phase("Paused", canaryVersion=v3)
    assert plugin(cluster, "promote", NAME).returncode == 0
    degraded = phase("Degraded", abort=True)
    conditions = {c["type"]: c for c in degraded["conditions"]}
    assert conditions["Degraded"]["reason"] in ("AnalysisFailed", "AnalysisError")
    assert "eval-loss" in conditions["Degraded"]["message"]
    assert conditions["Stalled"]["status"] == "True"

    def all_back() -> bool:
        return all(view(core, n).current == v2 and view(core, n).ready == "True" for n in PODS)

    wait_for(all_back, START_TIMEOUT_S, "every pod back on v2", operator.log)
    phase("Degraded", stableVersion=v2, says=f"every pod is back on {v2}")
    wait_for(
        lambda: (
            {"RolloutStarted", "Promoted", "PromotedStep"} <= event_reasons(core)
            and event_reasons(core) & {"AnalysisFailed", "AnalysisError"}
        ),
        30,
        "the rollout's Events",
        operator.log,
    )

    for recorder in recorders:
        recorder.stop()
        assert recorder.unsafe_ready(set(published.ids.values())) == []
    client.close()


def fleet(
    published: Published,
    replicas: int,
    crash_at: str | None = None,
    agent_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A Deployment of inference pods whose template asks for no version (the operator does),
    whose agents get ``agent_args`` and, with ``crash_at``, are SIGKILLed once there, then
    restarted by the kubelet."""
    pod = inference_pod(
        "template",
        store_uri=published.uri,
        version="unset",
        store_env={},
        crash_at=crash_at,
        agent_args=agent_args,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tiny-fleet", "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "tiny-fleet"}},
            "template": {"metadata": {"labels": {"app": "tiny-fleet"}}, "spec": pod["spec"]},
        },
    }


def test_crashes_restart_replaced_pod_promote_full_rollback_retry_rollback_window(
    cluster: RunningSandbox, operator: Operator, published: Published
) -> None:
    v1, v2, v3 = (published.ids[k] for k in ("v1", "v2", "v3"))
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    kubernetes.client.AppsV1Api(client).create_namespaced_deployment(
        NAMESPACE, fleet(published, 2, crash_at="scatter-half:3")
    )
    manifest = deployment(published, v1)
    manifest["spec"]["selector"] = {"matchLabels": {"app": "tiny-fleet"}}
    manifest["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 50}, {"pause": {}}, {"setWeight": 100},
    ]  # fmt: skip
    del manifest["spec"]["analysisTemplates"]
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)

    def pods() -> dict[str, Any]:
        listed = core.list_namespaced_pod(NAMESPACE, label_selector="app=tiny-fleet").items
        return {
            p.metadata.name: view(core, p.metadata.name)
            for p in listed
            if p.metadata.deletion_timestamp is None
        }

    phase = partial(wait_phase, custom, operator.log)

    def set_version(version: str) -> None:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": version}}
        )

    # brand-new pods are given the version by the operator, then serve it
    phase("Healthy", stableVersion=v1, totalPods=2, updatedPods=2)
    assert {p.current for p in pods().values()} == {v1}

    # mid-rollout: the operator dies, the canary pod is deleted, the operator comes back
    set_version(v2)
    phase("Paused", canaryVersion=v2)
    (canary_pod,) = [name for name, p in pods().items() if p.wanted == v2]
    operator.kill()
    core.delete_namespaced_pod(canary_pod, NAMESPACE)
    operator.start()

    def replaced() -> bool:
        now = pods()
        served = {(p.wanted, p.current) for p in now.values()}
        return canary_pod not in now and len(now) == 2 and served == {(v1, v1), (v2, v2)}

    wait_for(replaced, START_TIMEOUT_S, "a replacement pod serving v2", operator.log)
    assert phase("Paused", canaryVersion=v2)["currentStepIndex"] == 1

    assert plugin(cluster, "promote", NAME, "--full").returncode == 0
    phase("Healthy", stableVersion=v2, updatedPods=2)
    for name in pods():  # each agent was killed in the middle of its first delta and recovered
        pod = core.read_namespaced_pod(name, NAMESPACE)
        agent = next(s for s in pod.status.init_container_statuses if s.name == "deltaroll-agent")
        assert agent.restart_count == 1 and agent.last_state.terminated.exit_code == 137
        assert engine_checksum(view(core, name))["version"] == v2

    # a canary of v3, rolled back by hand, then retried
    set_version(v3)
    phase("Paused", canaryVersion=v3)
    assert plugin(cluster, "rollback", NAME).returncode == 0
    rolled_back = phase("Degraded", abort=True)
    assert {c["type"]: c["reason"] for c in rolled_back["conditions"]}["Degraded"] == "RolledBack"
    wait_for(
        lambda: {p.current for p in pods().values()} == {v2},
        START_TIMEOUT_S,
        "every pod back on v2",
        operator.log,
    )
    assert plugin(cluster, "retry", NAME).returncode == 0
    phase("Paused", canaryVersion=v3, abort=False)

    # git goes back to v1, promoted two versions ago: inside rollbackWindow, no canary steps
    set_version(v1)
    healthy = phase("Healthy", stableVersion=v1, updatedPods=2)
    assert [h["version"] for h in healthy["history"]][:2] == [v1, v2]
    wait_for(
        lambda: {"RolledBack", "Retried", "RollbackStarted", "PromotedFull"} <= event_reasons(core),
        30,
        "the rollout's Events",
        operator.log,
    )
    client.close()


def test_a_store_outage_mid_rollout_waits_and_finishes_when_the_store_is_back(
    cluster: RunningSandbox,
    published: Published,
    tmp_path: Path,
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s3 = S3Server()
    s3.start()
    uri = s3.upload_store(published, "rollout-outage")
    create_secret(cluster, "store-creds", s3.env())  # the operator reads version ids with it
    operator = Operator(cluster, tmp_path / "operator.log")
    operator.start()
    v1, v2 = published.ids["v1"], published.ids["v2"]
    client, core, custom = apis(cluster)
    try:
        start_pods(core, uri, v1, s3.env())
        manifest = deployment(published, v1)
        manifest["spec"]["store"] = {"uri": uri, "secretRef": {"name": "store-creds"}}
        manifest["spec"]["strategy"]["canary"]["steps"] = [
            {"setWeight": 50},
            {"analysis": {"templates": [{"templateName": "smoke"}]}},
            {"pause": {}},
            {"setWeight": 100},
        ]
        # an analysis Job (run by the sandbox's Job controller) checks what it is told to judge
        check = 'test "$DELTAROLL_CANARY_VERSION" = "$0" && test -n "$DELTAROLL_CANARY_PODS"'
        manifest["spec"]["analysisTemplates"] = [
            {"name": "smoke", "provider": {"job": {"command": ["sh", "-c", check, v2]}},
             "interval": "1s"}
        ]  # fmt: skip
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)

        phase = partial(wait_phase, custom, operator.log)

        phase("Healthy", stableVersion=v1)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": v2}}
        )
        paused = phase("Paused", canaryVersion=v2)
        (smoke,) = paused["analysisResults"]
        assert (smoke["phase"], smoke["successful"], smoke["lastValue"]) == (
            "Successful", 1, "Successful",
        )  # fmt: skip
        jobs = kubernetes.client.BatchV1Api(client).list_namespaced_job(NAMESPACE).items
        assert [j.metadata.owner_references[0].name for j in jobs] == [NAME]
        (stable_pod,) = [n for n in PODS if view(core, n).wanted == v1]

        s3.stop()
        assert plugin(cluster, "promote", NAME, "--full").returncode == 0

        def pulling_with_error() -> Any:
            pod = view(core, stable_pod)
            return pod.wanted == v2 and pod.state is AgentState.PULLING and pod.message

        wait_for(
            pulling_with_error, START_TIMEOUT_S, "the agent reporting the outage", operator.log
        )
        waiting = phase("Progressing")
        assert not waiting.get("abort")
        held = view(core, stable_pod)
        assert held.current == v1 and held.ready == "True"  # still serving the old version

        s3.start()
        phase("Healthy", stableVersion=v2, updatedPods=2)
        assert all(view(core, n).current == v2 for n in PODS)
    finally:
        operator.stop()
        client.close()
        s3.stop()


def test_two_deployments_selecting_one_pod_the_older_keeps_it_until_the_overlap_ends(
    cluster: RunningSandbox, operator: Operator, published: Published
) -> None:
    v1, v2 = published.ids["v1"], published.ids["v2"]
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    pod = inference_pod("infer-0", store_uri=published.uri, version=v1, store_env={})
    del pod["metadata"]["annotations"]  # the operator gives the pod its version
    pod["metadata"]["labels"] = {"app": "tiny-llm", "pool": "lab"}
    core.create_namespaced_pod(NAMESPACE, pod)
    recorder = ReadinessRecorder(core, "infer-0")
    recorder.start()
    # The older deployment sorts after the younger by name: age, not the name, decides.
    older = deployment(published, v1)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, older)
    wait_for(lambda: view(core, "infer-0").wanted == v1, START_TIMEOUT_S, "older's annotation")
    born = created["metadata"]["creationTimestamp"]
    wait_for(lambda: now_rfc3339() > born, 5, "a creationTimestamp one second later")
    younger = deployment(published, v2)
    younger["metadata"]["name"] = "lab"
    younger["spec"]["selector"] = {"matchLabels": {"pool": "lab"}}
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, younger)

    def degraded_of(name: str) -> dict[str, Any]:
        conditions = md_status(custom, name).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Degraded"), {})

    def overlap_or_taken() -> bool:
        return degraded_of("lab").get("reason") == "SelectorOverlap" or (
            view(core, "infer-0").wanted == v2
        )

    wait_for(overlap_or_taken, START_TIMEOUT_S, "the younger yielding", operator.log)
    assert view(core, "infer-0").wanted == v1
    yielded = md_status(custom, "lab")
    conditions = {c["type"]: c for c in yielded["conditions"]}
    assert yielded["phase"] == "Degraded"
    assert (conditions["Degraded"]["status"], conditions["Stalled"]["status"]) == ("True", "True")
    assert conditions["Ready"]["status"] == "False"
    message = conditions["Degraded"]["message"]
    assert "infer-0" in message and f"ModelDeployment {NAME}" in message
    shown = plugin(cluster, "status", "lab")  # what a person runs to find out why
    assert shown.returncode == 0, shown.stderr
    assert f"Message:      {message}" in shown.stdout
    assert "Condition:    Degraded=True (SelectorOverlap)" in shown.stdout

    def healthy(name: str, version: str) -> Any:
        def check() -> Any:
            status = md_status(custom, name)
            return status.get("phase") == "Healthy" and status.get("stableVersion") == version

        return wait_for(check, START_TIMEOUT_S, f"{name} Healthy on {version}", operator.log)

    healthy(NAME, v1)  # the older's rollout is unaffected; the younger ticked all along
    assert md_status(custom, "lab")["phase"] == "Degraded"
    assert [v.wanted for v in recorder.views if v.wanted not in (None, v1)] == []

    def events(reason: str) -> int:
        listed = core.list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=lab")
        return sum(e.count or 1 for e in listed.items if e.reason == reason)

    wait_for(lambda: events("SelectorOverlap") == 1, 30, "one SelectorOverlap Warning")

    # the pod leaves the older's selector: the younger takes it on its next reconcile
    core.patch_namespaced_pod("infer-0", NAMESPACE, {"metadata": {"labels": {"app": None}}})
    healthy("lab", v2)
    assert engine_checksum(view(core, "infer-0"))["version"] == v2
    assert degraded_of("lab")["status"] == "False"
    wait_for(lambda: events("SelectorOverlapResolved") == 1, 30, "a SelectorOverlapResolved")
    wait_for(lambda: md_status(custom, NAME).get("totalPods") == 0, 30, "the older without the pod")
    assert md_status(custom, NAME)["phase"] == "Healthy"

    # the label comes back: the older takes its pod back and the younger yields again (a new
    # Warning); then the older is deleted and the younger takes the pod on its next reconcile
    core.patch_namespaced_pod("infer-0", NAMESPACE, {"metadata": {"labels": {"app": "tiny-llm"}}})

    def taken_back() -> bool:
        return view(core, "infer-0").wanted == v1 and (
            degraded_of("lab").get("reason") == "SelectorOverlap"
        )

    wait_for(taken_back, START_TIMEOUT_S, "the older taking its pod back", operator.log)
    # the Event follows the status write of the same reconcile
    wait_for(lambda: events("SelectorOverlap") == 2, 30, "a Warning for the new overlap")
    custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    healthy("lab", v2)  # the pod wanted v1 when the older went: the younger moved it back
    assert view(core, "infer-0").wanted == v2
    assert engine_checksum(view(core, "infer-0"))["version"] == v2
    wait_for(
        lambda: (events("SelectorOverlap"), events("SelectorOverlapResolved")) == (2, 2),
        30,
        "a second SelectorOverlapResolved",
    )
    recorder.stop()
    assert recorder.unsafe_ready(set(published.ids.values())) == []
    client.close()


def test_a_promote_is_handled_when_it_arrives_not_when_a_timer_looks(
    cluster: RunningSandbox, published: Published, tmp_path: Path
) -> None:
    """With nothing on a clock (an indefinite pause), a rollout still moves: the new
    spec.version, the agents' reports (pod events) and a promote annotation each reach a handler
    when they arrive (Kopf once left every ``deltaroll.dev/*`` annotation out of its diff, so a
    promote waited for the operator's old 5 s timer)."""
    operator = Operator(cluster, tmp_path / "operator.log")
    operator.start()
    v1, v2 = published.ids["v1"], published.ids["v2"]
    client, core, custom = apis(cluster)
    try:
        start_pods(core, published.uri, v1, {})
        manifest = deployment(published, v1)
        manifest["spec"]["strategy"]["canary"]["steps"] = [
            {"setWeight": 50}, {"pause": {}}, {"setWeight": 100},
        ]  # fmt: skip
        del manifest["spec"]["analysisTemplates"]
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
        phase = partial(wait_phase, custom, operator.log)
        phase("Healthy", stableVersion=v1)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": {"version": v2}}
        )
        phase("Paused", canaryVersion=v2)
        assert plugin(cluster, "promote", NAME).returncode == 0
        phase("Healthy", stableVersion=v2, updatedPods=2)
    finally:
        operator.stop()
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
        for name in PODS:
            core.delete_namespaced_pod(name, NAMESPACE)
        client.close()
