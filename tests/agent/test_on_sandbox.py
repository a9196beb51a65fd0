"""The agent and the reference engine as a pod's processes on the sandbox (real kubelet, real
API, real S3 protocol): the issue's end-to-end cases.

The first four tests drive one pod through a life in order: v1 -> v2 (forward), back to v1
(rollback), to v2 while the store is down, to v3 whose delta is corrupt. The last test runs its
own pod, whose agent is SIGKILLed in the middle of an apply and restarted by the kubelet; the
scrub test runs its own pod too, whose weights get a flipped byte.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import kubernetes
import pytest
import yaml

from agent.helpers import (
    MODEL,
    NAMESPACE,
    Published,
    S3Server,
    assert_same_files,
    flip_untouched_byte,
    subprocess_env,
)
from agent.sandbox_pods import (
    ReadinessRecorder,
    agent_metrics,
    engine_checksum,
    inference_pod,
    view,
)
from deltaroll.api.agent_access import agent_access_objects
from deltaroll.api.agent_state import AgentState
from deltaroll.checkpoint import checkpoint_version
from deltaroll_sandbox.kubelet.pod import pod_dir
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox
from fixtures.cli import DELTAROLL
from fixtures.polling import wait_for

pytestmark = pytest.mark.slow
BUCKET = "agent-e2e"
START_TIMEOUT_S = 180.0  # an engine start imports torch and transformers on two busy cores


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.env().items():
            patch.setenv(key, value)
        yield server
    server.stop()


@pytest.fixture(scope="module")
def store_uri(s3: S3Server, published: Published) -> str:
    return s3.upload_store(published, BUCKET)


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """The sandbox with what the chart installs for the agent (RBAC, the own-pod policy)."""
    with running_sandbox(tmp_path_factory.mktemp("kube")) as sandbox:
        body = yaml.safe_dump_all(agent_access_objects(NAMESPACE))
        sandbox.kubectl("apply", "-f", "-", input=body)
        yield sandbox


@pytest.fixture(scope="module")
def core(kube: RunningSandbox) -> Iterator[kubernetes.client.CoreV1Api]:
    client = kube.api_client()
    yield kubernetes.client.CoreV1Api(client)
    client.close()


@pytest.fixture(scope="module")
def serving(
    core: kubernetes.client.CoreV1Api, store_uri: str, s3: S3Server, published: Published
) -> Iterator[ReadinessRecorder]:
    """The pod 'serve' Ready on v1, its readiness recorded from creation on."""
    recorder = ReadinessRecorder(core, "serve")
    recorder.start()
    core.create_namespaced_pod(
        NAMESPACE,
        inference_pod(
            "serve", store_uri=store_uri, version=published.ids["v1"], store_env=s3.env()
        ),
    )
    wait_ready_on(core, "serve", published.ids["v1"], timeout=START_TIMEOUT_S)
    yield recorder
    recorder.stop()
    assert recorder.unsafe_ready(set(published.ids.values())) == []


def wait_ready_on(
    core: kubernetes.client.CoreV1Api, name: str, version: str, timeout: float = 120.0
) -> None:
    def arrived() -> object:
        pod = view(core, name)
        return pod.ready == "True" and pod.current == version and pod.state is AgentState.READY

    try:
        wait_for(arrived, timeout=timeout, interval=0.2)
    except AssertionError:
        logs = core.read_namespaced_pod_log(name, NAMESPACE, container="deltaroll-agent")
        raise AssertionError(f"{name} not Ready on {version}: {view(core, name)}\n{logs}") from None


@contextmanager
def recorded_pod(
    core: kubernetes.client.CoreV1Api,
    name: str,
    store_uri: str,
    s3: S3Server,
    version: str,
    **options: Any,
) -> Iterator[ReadinessRecorder]:
    """A pod of its own, Ready on ``version``, its readiness recorded from creation on; the
    record is complete once the block ends. ``options`` go to :func:`inference_pod`."""
    recorder = ReadinessRecorder(core, name)
    recorder.start()
    try:
        core.create_namespaced_pod(
            NAMESPACE,
            inference_pod(
                name, store_uri=store_uri, version=version, store_env=s3.env(), **options
            ),
        )
        wait_ready_on(core, name, version, timeout=START_TIMEOUT_S)
        yield recorder
    finally:
        recorder.stop()


def annotate(core: kubernetes.client.CoreV1Api, name: str, version: str) -> None:
    core.patch_namespaced_pod(
        name,
        NAMESPACE,
        {"metadata": {"annotations": {"deltaroll.dev/version": version}}},
        _content_type="application/merge-patch+json",
    )


def pulled_version(store_uri: str, version: str, out: Path, s3: S3Server) -> str:
    """``deltaroll pull`` of ``version`` as a user runs it; the version id of what it wrote."""
    done = subprocess.run(
        [str(DELTAROLL), "pull", store_uri, MODEL, version, "-o", str(out), "--json"],
        env=subprocess_env(**s3.env(), DELTAROLL_CACHE_DIR=str(out.parent / "pull-cache")),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["version"] == version
    return checkpoint_version(out)


def test_annotating_a_new_version_moves_the_engine_to_it(
    core: kubernetes.client.CoreV1Api,
    serving: ReadinessRecorder,
    published: Published,
    store_uri: str,
    s3: S3Server,
    tmp_path: Path,
) -> None:
    v1, v2 = published.ids["v1"], published.ids["v2"]
    annotate(core, "serve", v2)
    wait_ready_on(core, "serve", v2)
    pod = view(core, "serve")
    held = engine_checksum(pod)
    assert held["version"] == v2 == pulled_version(store_uri, v2, tmp_path / "pulled", s3)
    metrics = agent_metrics(pod)
    assert metrics["deltaroll_agent_downloaded_bytes_total"] == (
        published.anchor_bytes("v1") + published.delta_bytes("v2")
    )
    assert metrics['deltaroll_agent_applied_deltas_total{kind="forward"}'] == 1
    # Ready on v1 and never out of traffic since: the reference engine took v2 in memory while
    # it served v1; and never Ready on unverified weights.
    assert metrics['deltaroll_agent_pause_seconds_count{method="in-memory"}'] == 1
    serving.catch_up()
    assert serving.ready_flips()[-1] == ("True", v1)
    assert (serving.views[-1].ready, serving.views[-1].current) == ("True", v2)
    assert serving.unsafe_ready(set(published.ids.values())) == []


def test_rolling_back_reverses_the_delta_without_a_full_download(
    core: kubernetes.client.CoreV1Api, serving: ReadinessRecorder, published: Published
) -> None:
    v1 = published.ids["v1"]
    before = agent_metrics(view(core, "serve"))
    annotate(core, "serve", v1)
    wait_ready_on(core, "serve", v1)
    pod = view(core, "serve")
    after = agent_metrics(pod)
    assert engine_checksum(pod)["version"] == v1 == checkpoint_version(published.paths["v1"])
    assert after['deltaroll_agent_applied_deltas_total{kind="reverse"}'] == 1
    assert after['deltaroll_agent_applied_deltas_total{kind="anchor"}'] == 1  # the first pull only
    # The reversed delta's objects are still in the agent's cache: nothing is downloaded.
    assert (
        after["deltaroll_agent_downloaded_bytes_total"]
        == before["deltaroll_agent_downloaded_bytes_total"]
    )
    assert serving.unsafe_ready(set(published.ids.values())) == []


def test_store_unreachable_keeps_serving_then_finishes(
    core: kubernetes.client.CoreV1Api,
    serving: ReadinessRecorder,
    published: Published,
    s3: S3Server,
) -> None:
    v1, v2 = published.ids["v1"], published.ids["v2"]
    s3.stop()
    try:
        # v2's objects are cached from the first test; the store is needed for its manifests.
        annotate(core, "serve", v2)
        # The store's error (naming its endpoint) replaces "fetching the deltas to ...".
        wait_for(
            lambda: (
                (p := view(core, "serve")).state is AgentState.PULLING
                and s3.endpoint.split("//")[1] in p.message
            ),
            timeout=60,
        )
        wait_for(lambda: agent_metrics(view(core, "serve")).get(
            'deltaroll_agent_retries_total{state="Pulling"}', 0) >= 2, timeout=60)  # fmt: skip
        pod = view(core, "serve")
        assert (pod.ready, pod.current, pod.state) == ("True", v1, AgentState.PULLING)
        assert engine_checksum(pod)["version"] == v1
    finally:
        s3.start()
    wait_ready_on(core, "serve", v2)
    assert serving.unsafe_ready(set(published.ids.values())) == []


def test_a_corrupt_delta_fails_naming_the_object_and_keeps_the_old_version(
    core: kubernetes.client.CoreV1Api,
    serving: ReadinessRecorder,
    published: Published,
    s3: S3Server,
) -> None:
    v2, v3 = published.ids["v2"], published.ids["v3"]
    delta = published.store().versions(MODEL)[v3].delta
    assert delta is not None
    victim = max(delta.objects, key=lambda ref: ref.size)
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    key = f"models/{MODEL}/objects/{victim.digest}"
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))

    annotate(core, "serve", v3)
    failed = wait_for(
        lambda: (p := view(core, "serve")).state is AgentState.FAILED and p, timeout=60
    )
    assert victim.digest in failed.message and "corrupt" in failed.message
    assert (failed.ready, failed.current) == ("True", v2)  # the old version is kept and served
    assert engine_checksum(failed)["version"] == v2
    assert serving.unsafe_ready(set(published.ids.values())) == []


def test_agent_killed_during_apply_is_restarted_and_ends_ready(
    core: kubernetes.client.CoreV1Api,
    store_uri: str,
    s3: S3Server,
    published: Published,
) -> None:
    v1, v2 = published.ids["v1"], published.ids["v2"]
    crash_once = {"crash_at": "scatter-half:3"}
    with recorded_pod(core, "crash", store_uri, s3, v1, **crash_once) as recorder:
        annotate(core, "crash", v2)
        wait_ready_on(core, "crash", v2)
    pod = core.read_namespaced_pod("crash", NAMESPACE)
    agent_status = next(  # a native sidecar: reported among the init containers
        s for s in pod.status.init_container_statuses if s.name == "deltaroll-agent"
    )
    assert agent_status.restart_count == 1
    assert agent_status.last_state.terminated.exit_code == 137  # SIGKILL
    assert engine_checksum(view(core, "crash"))["version"] == v2
    assert recorder.unsafe_ready(set(published.ids.values())) == []
    assert [ready for ready, _ in recorder.ready_flips()][-3:] == ["True", "False", "True"]


def test_the_scrub_finds_a_flipped_byte_and_the_pod_comes_back_bit_exact(
    core: kubernetes.client.CoreV1Api,
    kube: RunningSandbox,
    store_uri: str,
    s3: S3Server,
    published: Published,
) -> None:
    """No apply runs after the flip: only the scrub (comparing bytes with digests, at a high
    rate in this test) can notice it; the pod leaves its Service and comes back rebuilt."""
    v1, v2 = published.ids["v1"], published.ids["v2"]
    scrub_fast = (f"--scrub-rate={1 << 30}", "--scrub-interval=0.2")
    with recorded_pod(core, "scrub", store_uri, s3, v1, agent_args=scrub_fast) as recorder:
        annotate(core, "scrub", v2)  # a delta in place: the flip goes where it left the bytes
        wait_ready_on(core, "scrub", v2)
        wait_for(lambda: scrub_metric(core, "passes") >= 1, timeout=60)  # clean before the flip
        pod = kubernetes.client.ApiClient().sanitize_for_serialization(
            core.read_namespaced_pod("scrub", NAMESPACE)
        )
        weights = pod_dir(kube.directory, pod) / "volumes" / "weights" / "weights"
        tensor, path = flip_untouched_byte(weights, published.paths["v1"])
        wait_for(lambda: scrub_metric(core, "mismatches") == 1, timeout=60)
        wait_for(
            lambda: agent_metrics(view(core, "scrub"))[
                'deltaroll_agent_applied_deltas_total{kind="anchor"}'] == 2, timeout=60,
        )  # fmt: skip
        wait_ready_on(core, "scrub", v2)
    named = [v for v in recorder.views if v.state is AgentState.FAILED and tensor in v.message]
    assert named and named[0].weights_ready == "False" and path.name in named[0].message
    assert [ready for ready, _ in recorder.ready_flips()][-3:] == ["True", "False", "True"]
    assert recorder.unsafe_ready(set(published.ids.values())) == []
    assert engine_checksum(view(core, "scrub"))["version"] == v2
    assert_same_files(weights, published.paths["v2"])


def scrub_metric(core: kubernetes.client.CoreV1Api, name: str) -> float:
    return agent_metrics(view(core, "scrub")).get(f"deltaroll_agent_scrub_{name}_total", 0.0)


# -------------------------------------------------------------- confinement (issue 15: 4 and 5)

ATTACK = """
import os, sys, kubernetes
target = sys.argv[1]
if os.environ.get("KUBECONFIG"):  # whatever credentials this container was given
    kubernetes.config.load_kube_config()
    api = kubernetes.client.CoreV1Api()
else:
    config = kubernetes.client.Configuration()
    config.host = "https://{KUBERNETES_SERVICE_HOST}:{KUBERNETES_SERVICE_PORT}".format(**os.environ)
    config.verify_ssl = False
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
try:
    api.patch_namespaced_pod(target, "default", {"metadata": {"labels": {"owned": "yes"}}})
    print("PATCHED", flush=True)
except kubernetes.client.ApiException as exc:
    print("REFUSED", exc.status, flush=True)
"""


def test_an_engine_container_cannot_reach_the_api(
    core: kubernetes.client.CoreV1Api, serving: ReadinessRecorder
) -> None:
    """A compromised engine container of an inference pod tries every credential it has on
    another pod: it has none (no token mounted, no kubeconfig), so it is refused."""
    spec = inference_pod("attacker", store_uri="file:///unused", version="v0", store_env={})
    spec["spec"]["initContainers"] = []
    engine = spec["spec"]["containers"][0]
    engine.update(command=["python", "-c", ATTACK, "serve"], args=[], readinessProbe=None)
    spec["spec"]["restartPolicy"] = "Never"
    core.create_namespaced_pod(NAMESPACE, spec)
    try:
        wait_for(
            lambda: core.read_namespaced_pod("attacker", NAMESPACE).status.phase == "Succeeded",
            timeout=60,
        )
        log = core.read_namespaced_pod_log("attacker", NAMESPACE, container="engine")
        assert "REFUSED 403" in log.splitlines(), log
        assert "owned" not in (core.read_namespaced_pod("serve", NAMESPACE).metadata.labels or {})
    finally:
        core.delete_namespaced_pod("attacker", NAMESPACE, grace_period_seconds=0)


def test_the_agents_own_token_changes_only_its_own_pods_report(
    kube: RunningSandbox, core: kubernetes.client.CoreV1Api, serving: ReadinessRecorder
) -> None:
    """The agent's real token (its projected volume): refused on another pod's annotations,
    labels and readiness condition and on its own pod's labels; its own report goes through."""
    pod = core.read_namespaced_pod("serve", NAMESPACE).to_dict()
    token_file = pod_dir(kube.directory, {"metadata": pod["metadata"]}) / "volumes" / "agent-token"
    config = kubernetes.client.Configuration()
    config.host = kube.api_url
    config.ssl_ca_cert = str(token_file / "ca.crt")
    config.api_key = {"authorization": "Bearer " + (token_file / "token").read_text()}
    agent = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    core.create_namespaced_pod(
        NAMESPACE,
        {
            "metadata": {"name": "bystander", "labels": {"app": "other"}},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "300"]}]},
        },
    )
    merge = {"_content_type": "application/merge-patch+json"}
    weights_ready = {"type": "deltaroll.dev/weights-ready", "status": "False"}
    attempts = {
        "annotations": (agent.patch_namespaced_pod, "bystander", {
            "metadata": {"annotations": {"deltaroll.dev/current-version": "forged"}}}),
        "labels": (agent.patch_namespaced_pod, "bystander", {"metadata": {"labels": {"app": "x"}}}),
        "condition": (agent.patch_namespaced_pod_status, "bystander", {
            "status": {"conditions": [weights_ready]}}),
        "own labels": (agent.patch_namespaced_pod, "serve", {"metadata": {"labels": {"a": "b"}}}),
        "own wanted version": (agent.patch_namespaced_pod, "serve", {
            "metadata": {"annotations": {"deltaroll.dev/version": "forged"}}}),
    }  # fmt: skip
    try:
        for what, (method, name, body) in attempts.items():
            with pytest.raises(kubernetes.client.ApiException) as refused:
                method(name, NAMESPACE, body, **merge)
            assert refused.value.status == 403, what
            assert "ValidatingAdmissionPolicy 'deltaroll-agent-own-pod'" in refused.value.body
        own = {"metadata": {"annotations": {"deltaroll.dev/agent-state": "Ready"}}}
        agent.patch_namespaced_pod("serve", NAMESPACE, own, **merge)
        bystander = core.read_namespaced_pod("bystander", NAMESPACE)
        assert bystander.metadata.labels == {"app": "other"}
        assert not (bystander.metadata.annotations or {}).get("deltaroll.dev/current-version")
    finally:
        core.delete_namespaced_pod("bystander", NAMESPACE, grace_period_seconds=0)


def test_the_service_port_serves_no_reload(serving: ReadinessRecorder, core) -> None:
    """The engine's inference port (what a Service exposes) has no reload route; the agent
    reloaded through the admin port, on the pod's loopback."""
    pod = view(core, "serve")
    request = urllib.request.Request(
        f"http://127.0.0.1:{pod.ports['http']}/update_weights_from_disk",
        data=json.dumps({"model_path": "/elsewhere"}).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404
    assert engine_checksum(pod)["version"] == pod.current
