"""The real operator on an API-only sandbox with simulated pods (``simulated_fleet``): a
ModelDeployment carries no finalizer (one left by an older operator is released), so it is
deleted while the operator is down; an idle operator makes no request at all; a starting
operator reads a ModelDeployment's pods once, not once more per pod its watch lists; and a timed
pause ends at its end with no event and no polling in between.

The sandbox's audit log says what the operator asked for; the tests read objects inside the
sandbox's process, so their own reads are not among the operator's requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controllers.modeldelta_world import Operator, wait_for
from controllers.simulated_fleet import (
    GROUP,
    NAMESPACE,
    PLURAL,
    VERSION,
    ObedientAgents,
    modeldeployment,
    pod,
    push_versions,
    quiet_since,
    read,
    ready,
    requests_since,
)
from deltaroll.api.annotations import FINALIZER, POD_VERSION
from deltaroll.api.conditions import parse_rfc3339
from deltaroll.controllers.modeldeployment.pods import POD_VERSION_SET_AT
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox

REPO = Path(__file__).resolve().parents[2]
QUIET_S = 6.0  # longer than the 5 s the operator's timer once polled every object at
PAUSE_S = 8


@pytest.fixture
def api_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSandbox]:
    """An API-only sandbox (no kubelet: the pods are simulated) with the CRDs installed."""
    with running_sandbox(tmp_path / "sandbox", run_pods=False) as sandbox:
        monkeypatch.setenv("KUBECONFIG", str(sandbox.kubeconfig_path))
        sandbox.kubectl("apply", "-f", str(REPO / "crds"))
        yield sandbox


@pytest.fixture
def apis(api_cluster: RunningSandbox) -> Iterator[tuple[Any, Any]]:
    client = api_cluster.api_client()
    yield kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
    client.close()


def serving_pods(core: Any, version: str, names: tuple[str, ...], labels: dict[str, str]) -> None:
    for name in names:
        core.create_namespaced_pod(NAMESPACE, pod(name, labels, version))
        ready(core, name)


def status_of(cluster: RunningSandbox, name: str) -> dict[str, Any]:
    return dict(read(cluster, PLURAL, name).get("status") or {})


def wait_healthy(cluster: RunningSandbox, name: str, log: Any) -> None:
    wait_for(lambda: status_of(cluster, name).get("phase") == "Healthy", 120, "Healthy on v1", log)


def wait_quiet(cluster: RunningSandbox, log: Any) -> float:
    """Until a second passes without a request (Kopf's last bookkeeping lands after the status
    the test waited for); the time it began."""

    return float(wait_for(lambda: quiet_since(cluster), 60, "a quiet second", log))


def test_deleted_with_the_operator_down_and_an_old_finalizer_released(
    api_cluster: RunningSandbox, apis: tuple[Any, Any], tmp_path: Path
) -> None:
    core, custom = apis
    uri = push_versions(tmp_path)
    serving_pods(core, "v1", ("solo-0",), {"app": "solo"})
    manifest = modeldeployment("solo", uri, "v1", {"app": "solo"})
    manifest["metadata"]["finalizers"] = [FINALIZER]  # as the operator with a timer left it
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
    operator = Operator(api_cluster, tmp_path / "operator.log")
    operator.start()
    try:

        def released() -> bool:
            body = read(api_cluster, PLURAL, "solo")
            healthy = (body.get("status") or {}).get("phase") == "Healthy"
            return healthy and not body["metadata"].get("finalizers")

        wait_for(released, 120, "Healthy and the old finalizer released", operator.log)
    finally:
        operator.stop()
    # the operator is down, as after `helm uninstall` or with its node gone
    custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "solo")
    assert read(api_cluster, PLURAL, "solo") == {}  # gone at once: nothing holds it


def test_a_starting_operator_reads_a_deployments_pods_once_not_once_per_listed_pod(
    api_cluster: RunningSandbox, apis: tuple[Any, Any], tmp_path: Path
) -> None:
    core, custom = apis
    uri = push_versions(tmp_path)
    names = tuple(f"wide-{i}" for i in range(8))
    serving_pods(core, "v1", names, {"app": "wide"})
    custom.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, modeldeployment("wide", uri, "v1", {"app": "wide"})
    )
    started = time.monotonic()
    operator = Operator(api_cluster, tmp_path / "operator.log")
    operator.start()
    try:
        wait_healthy(api_cluster, "wide", operator.log)
        quiet = wait_quiet(api_cluster, operator.log)
    finally:
        operator.stop()
    asked = [r for r in requests_since(api_cluster, started) if r.at < quiet]
    pod_lists = [r for r in asked if r.path == f"/api/v1/namespaces/{NAMESPACE}/pods"]
    # Its first reconcile lists the 8 pods; the 8 events of the pod watch's own first list show
    # it nothing new (each used to start a reconcile of its own: a GET and a LIST per pod).
    assert len(pod_lists) <= 2, [f"{r.method} {r.path}?{r.query}" for r in asked]


def test_idle_operator_asks_nothing_and_a_timed_pause_ends_on_time_without_events(
    api_cluster: RunningSandbox, apis: tuple[Any, Any], tmp_path: Path
) -> None:
    core, custom = apis
    uri = push_versions(tmp_path)
    names = ("paced-0", "paced-1")
    serving_pods(core, "v1", names, {"app": "paced"})
    steps = [{"setWeight": 50}, {"pause": {"duration": f"{PAUSE_S}s"}}, {"setWeight": 100}]
    manifest = modeldeployment(
        "paced", uri, "v1", {"app": "paced"}, strategy={"canary": {"steps": steps}}
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
    agents = ObedientAgents(api_cluster.api_client(), list(names)).start()
    operator = Operator(api_cluster, tmp_path / "operator.log")
    operator.start()
    try:
        wait_healthy(api_cluster, "paced", operator.log)
        assert requests_since(api_cluster, 0)  # the audit log sees the operator's requests
        start = wait_quiet(api_cluster, operator.log)
        time.sleep(QUIET_S)
        assert requests_since(api_cluster, start) == [], "an idle operator polled"

        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, "paced", {"spec": {"version": "v2"}}
        )
        paused = wait_for(
            lambda: (s := status_of(api_cluster, "paced")).get("phase") == "Paused" and s,
            60,
            "the timed pause",
            operator.log,
        )
        pause_ends = parse_rfc3339(paused["pauseStartTime"]).timestamp() + PAUSE_S
        during = wait_quiet(api_cluster, operator.log)
        healthy = wait_for(
            lambda: (s := status_of(api_cluster, "paced")).get("stableVersion") == "v2" and s,
            120,
            "v2 promoted after the pause",
            operator.log,
        )
        assert healthy["phase"] == "Healthy"
        # Nothing happened during the pause: no event, and the operator asked nothing until
        # the pause's end, when it moved the second pod by itself.
        asked = [r for r in requests_since(api_cluster, during) if r.at < time.monotonic()]
        first = min(r.at for r in asked)
        assert time.time() - (time.monotonic() - first) >= pause_ends - 1  # not before its end
        moved = [read(api_cluster, "pods", n)["metadata"]["annotations"] for n in names]
        set_at = sorted(parse_rfc3339(a[POD_VERSION_SET_AT]).timestamp() for a in moved)
        assert [a[POD_VERSION] for a in moved] == ["v2", "v2"]
        assert set_at[1] >= pause_ends
    finally:
        operator.stop()
        agents.stop()
