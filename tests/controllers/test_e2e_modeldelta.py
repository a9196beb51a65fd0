"""The real operator on the sandbox: Kopf over HTTPS, Jobs running the real worker."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import pytest

from controllers.conftest import STORE_SECRET
from controllers.modeldelta_world import (
    Gate,
    Operator,
    apply,
    create_secret,
    events_for,
    get,
    jobs_of,
    modeldelta,
    wait_for,
    wait_for_warning,
)
from deltaroll.api.annotations import LAST_HANDLED
from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store
from deltaroll_sandbox.testing import RunningSandbox
from fixtures.cli import deltaroll_json, run_deltaroll
from fixtures.deltas import delta_content
from fixtures.files import visible_names
from worker.helpers import refuse_new_objects

pytestmark = pytest.mark.slow


@pytest.fixture
def store_uri(tmp_path: Path, trained: list[Path]) -> str:
    uri = f"file://{tmp_path / 'store'}"
    Store(uri, cache_dir=tmp_path / "cache").push("tiny", trained[0], name="step-0")
    return uri


def _phase(cluster: RunningSandbox, name: str, *phases: str) -> dict | None:
    body = get(cluster, "modeldelta", name)
    status = (body or {}).get("status") or {}
    return body if status.get("phase") in phases else None


def test_a_modeldelta_reaches_ready_with_the_numbers_of_the_store(
    cluster: RunningSandbox, operator: Operator, store_uri: str, trained: list[Path], tmp_path: Path
) -> None:
    apply(cluster, modeldelta("step-1", store_uri, trained[1]))

    body = wait_for(
        lambda: _phase(cluster, "step-1", "Ready", "Failed"), 120, "Ready", operator.log
    )

    status = body["status"]
    assert status["phase"] == "Ready", status
    assert status["versionId"] == checkpoint_version(trained[1])
    logged = deltaroll_json("log", store_uri, "tiny")
    entry = next(v for v in logged["versions"] if v["version"] == status["versionId"])
    assert status["deltaBytes"] == entry["delta_bytes"]
    assert status["parentVersionId"] == entry["parent"]
    assert entry["names"] == ["step-1"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (
        ready["status"] == "True" and ready["observedGeneration"] == body["metadata"]["generation"]
    )
    out = tmp_path / "pulled"
    pulled = run_deltaroll("pull", store_uri, "tiny", "step-1", "-o", out)
    assert pulled.returncode == 0, pulled.stderr
    names = visible_names(trained[1])
    assert visible_names(out) == names
    assert filecmp.cmpfiles(out, trained[1], names, shallow=False)[0] == names
    job = get(cluster, "job", status["jobRef"]["name"])
    assert job is not None
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "ModelDelta",
        body["metadata"]["uid"],
        True,
    )
    assert not body["metadata"].get("finalizers")  # Retain: nothing to clean up
    wait_for(
        lambda: {"JobCreated", "Published"} <= {e["reason"] for e in events_for(cluster, "step-1")},
        30,
        "an Event per transition",
    )


def _condition(body: dict, kind: str = "Ready") -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def _versions(store_uri: str) -> set[str]:
    return set(Store(store_uri).versions("tiny"))


def test_a_version_already_in_the_store_is_ready_without_a_job(
    cluster: RunningSandbox, operator: Operator, store_uri: str, trained: list[Path]
) -> None:
    apply(cluster, modeldelta("step-0", store_uri, trained[0], parent=None))
    body = wait_for(lambda: _phase(cluster, "step-0", "Ready", "Failed"), 60, "Ready", operator.log)
    assert body["status"]["versionId"] == checkpoint_version(trained[0])
    assert body["status"]["fullBytes"] == sum(p.stat().st_size for p in trained[0].iterdir())
    assert jobs_of(cluster, "step-0") == []


def test_a_missing_parent_fails_before_any_job(
    cluster: RunningSandbox, operator: Operator, store_uri: str, trained: list[Path]
) -> None:
    apply(cluster, modeldelta("step-1", store_uri, trained[1], parent="step-119"))
    body = wait_for(lambda: _phase(cluster, "step-1", "Failed"), 60, "Failed", operator.log)
    ready = _condition(body)
    assert ready["reason"] == "ParentNotFound"
    assert f"parent step-119 not found in {store_uri}" in ready["message"]
    assert jobs_of(cluster, "step-1") == []
    wait_for_warning(cluster, "step-1", "ParentNotFound")


def test_an_unreadable_target_fails_the_job_with_the_workers_reason(
    cluster: RunningSandbox, operator: Operator, store_uri: str, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "model.safetensors").write_bytes(b"not safetensors at all")
    before = _versions(store_uri)
    apply(cluster, modeldelta("step-1", store_uri, bogus))
    body = wait_for(
        lambda: _phase(cluster, "step-1", "Failed", "Ready"), 90, "Failed", operator.log
    )
    assert body["status"]["phase"] == "Failed"
    assert _condition(body)["reason"] == "InvalidTarget"
    assert "model.safetensors" in _condition(body)["message"]
    assert _versions(store_uri) == before


def test_a_store_that_refuses_writes_fails_and_publishes_nothing(
    cluster: RunningSandbox,
    operator: Operator,
    store_uri: str,
    trained: list[Path],
    tmp_path: Path,
) -> None:
    assert refuse_new_objects(tmp_path / "store", trained[0], trained[1], tmp_path)
    before = _versions(store_uri)
    apply(cluster, modeldelta("step-1", store_uri, trained[1]))
    body = wait_for(
        lambda: _phase(cluster, "step-1", "Failed", "Ready"), 90, "Failed", operator.log
    )
    assert body["status"]["phase"] == "Failed"
    assert _condition(body)["reason"] == "StoreAccessDenied"
    assert _versions(store_uri) == before


def test_a_worker_killed_mid_way_is_retried_then_fails(
    cluster: RunningSandbox, operator: Operator, store_uri: str, hanging_s3_secret: str
) -> None:
    import os
    import signal

    manifest = modeldelta(
        "step-1", store_uri, "s3://checkpoints/run/step-1", job={"backoffLimit": 1}
    )
    manifest["spec"]["store"]["secretRef"] = {"name": hanging_s3_secret}
    apply(cluster, manifest)
    killed: set[int] = set()

    def kill_workers() -> dict | None:
        for pid in cluster.live_pids() - killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        return _phase(cluster, "step-1", "Failed", "Ready")

    body = wait_for(kill_workers, 120, "Failed after retries", operator.log)
    assert body["status"]["phase"] == "Failed"
    assert len(killed) == 2  # the first pod and its one retry (backoffLimit 1)
    assert _condition(body)["message"] == "Job failed: Error (exit code 137: killed by SIGKILL)"
    (job,) = jobs_of(cluster, "step-1")
    assert job["status"]["failed"] == 2
    assert _versions(store_uri) == {checkpoint_version_of_step0(store_uri)}


def checkpoint_version_of_step0(store_uri: str) -> str:
    return Store(store_uri).resolve("tiny", "step-0")


def test_the_operator_killed_while_a_job_runs_still_reaches_ready_once(
    cluster: RunningSandbox,
    operator: Operator,
    store_uri: str,
    trained: list[Path],
    gated_s3: tuple[Any, Gate],
) -> None:
    s3, gate = gated_s3
    s3.create_bucket(Bucket="checkpoints")
    for path in trained[1].iterdir():
        s3.upload_file(str(path), "checkpoints", f"run/step-1/{path.name}")
    create_secret(
        cluster,
        "s3-creds",
        {
            "AWS_ENDPOINT_URL": gate.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
        },
    )
    manifest = modeldelta("step-1", store_uri, "s3://checkpoints/run/step-1")
    manifest["spec"]["store"]["secretRef"] = {"name": "s3-creds"}
    apply(cluster, manifest)

    def computing_and_handled() -> Any:
        body = _phase(cluster, "step-1", "Computing")
        annotations = (body or {}).get("metadata", {}).get("annotations") or {}
        # Kopf stores what it handled after the handler's status patch; killed before that, the
        # restarted operator would see a creation, not a resume
        return body and LAST_HANDLED in annotations and cluster.live_pids()

    wait_for(computing_and_handled, 60, "a running worker, handled", operator.log)

    operator.kill()  # the worker keeps waiting at the gate: the Job is running throughout
    operator.start()
    wait_for(lambda: "Resuming is processed" in operator.log(), 60, "the resume", operator.log)
    assert _phase(cluster, "step-1", "Computing") and cluster.live_pids()
    gate.opened.set()

    body = wait_for(
        lambda: _phase(cluster, "step-1", "Ready", "Failed"), 120, "Ready", operator.log
    )
    assert body["status"]["phase"] == "Ready", body["status"]
    assert body["status"]["versionId"] == checkpoint_version(trained[1])
    assert len(jobs_of(cluster, "step-1")) == 1
    wait_for(
        lambda: "Published" in [e["reason"] for e in events_for(cluster, "step-1")],
        30,
        "the Published event",
    )
    assert [e["reason"] for e in events_for(cluster, "step-1")].count("Published") == 1


def test_a_spec_change_while_computing_replaces_the_job(
    cluster: RunningSandbox,
    operator: Operator,
    store_uri: str,
    trained: list[Path],
    hanging_s3_secret: str,
) -> None:
    manifest = modeldelta("step-1", store_uri, "s3://checkpoints/run/step-1")
    manifest["spec"]["store"]["secretRef"] = {"name": hanging_s3_secret}
    apply(cluster, manifest)
    (hanging,) = wait_for(lambda: jobs_of(cluster, "step-1"), 60, "the first Job", operator.log)
    manifest["spec"]["source"]["checkpoint"]["uri"] = f"file://{trained[1]}"
    apply(cluster, manifest)
    body = wait_for(
        lambda: _phase(cluster, "step-1", "Ready", "Failed"), 120, "Ready", operator.log
    )
    assert body["status"]["phase"] == "Ready", body["status"]
    assert body["status"]["versionId"] == checkpoint_version(trained[1])
    names = [j["metadata"]["name"] for j in jobs_of(cluster, "step-1")]
    assert hanging["metadata"]["name"] not in names and len(names) == 1
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2


def test_an_indexed_job_of_three_gives_the_version_id_of_one_worker(
    cluster: RunningSandbox, operator: Operator, trained_sharded: list[Path], tmp_path: Path
) -> None:
    uri = f"file://{tmp_path / 'sharded-store'}"
    Store(uri, cache_dir=tmp_path / "cache").push("tiny", trained_sharded[0], name="step-0")
    apply(cluster, modeldelta("step-1", uri, trained_sharded[1], job={"parallelism": 3}))
    body = wait_for(
        lambda: _phase(cluster, "step-1", "Ready", "Failed"), 120, "Ready", operator.log
    )
    assert body["status"]["phase"] == "Ready", body["status"]
    single = Store(f"file://{tmp_path / 'single'}", cache_dir=tmp_path / "cache")
    single.push("tiny", trained_sharded[0], name="step-0")
    alone = single.push("tiny", trained_sharded[1], base=trained_sharded[0], name="step-1")
    assert body["status"]["versionId"] == alone.version
    # The last index names the version before its pod exits, so the ModelDelta can be Ready
    # a moment before the Job counts that index as succeeded.
    job = wait_for(
        lambda: next(
            (j for j in jobs_of(cluster, "step-1") if j["status"].get("succeeded") == 3), None
        ),
        60,
        "Job step-1 with 3 succeeded indexes",
        operator.log,
    )
    assert len(jobs_of(cluster, "step-1")) == 1
    assert (job["spec"]["completionMode"], job["status"]["succeeded"]) == ("Indexed", 3)
    delta_json = Store(uri).versions("tiny")[alone.version].delta
    assert delta_json is not None
    one = single.versions("tiny")[alone.version].delta
    assert one is not None
    # The same delta as one worker's, packed differently (each index packs its own payloads).
    assert delta_content(tmp_path / "sharded-store", delta_json) == delta_content(
        tmp_path / "single", one
    )


def test_deletion_policy_delete_removes_the_version_unless_a_deployment_uses_it(
    cluster: RunningSandbox, operator: Operator, store_uri: str, trained: list[Path]
) -> None:
    import kubernetes

    apply(cluster, modeldelta("step-1", store_uri, trained[1], deletionPolicy="Delete"))
    apply(
        cluster,
        modeldelta("step-2", store_uri, trained[2], parent="step-1", deletionPolicy="Delete"),
    )
    one = wait_for(lambda: _phase(cluster, "step-1", "Ready"), 120, "step-1 Ready", operator.log)
    two = wait_for(lambda: _phase(cluster, "step-2", "Ready"), 120, "step-2 Ready", operator.log)
    assert one["metadata"]["finalizers"] == ["deltaroll.dev/cleanup"]
    with cluster.api_client() as client:
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            "deltaroll.dev",
            "v1alpha1",
            "default",
            "modeldeployments",
            {
                "apiVersion": "deltaroll.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "serving", "namespace": "default"},
                "spec": {
                    "model": "tiny",
                    "version": "step-1",
                    "store": {"uri": store_uri},
                    "selector": {"matchLabels": {"app": "tiny"}},
                    "engine": {"kind": "reference", "port": 8000},
                },
            },
        )

    cluster.kubectl("delete", "modeldelta", "step-2", "step-1", "--wait=false")

    wait_for(
        lambda: (
            get(cluster, "modeldelta", "step-1") is None
            and get(cluster, "modeldelta", "step-2") is None
        ),
        60,
        "both deleted",
        operator.log,
    )
    left = _versions(store_uri)
    assert one["status"]["versionId"] in left  # a ModelDeployment serves it
    assert two["status"]["versionId"] not in left
    wait_for(
        lambda: any(e["reason"] == "VersionKept" for e in events_for(cluster, "step-1")),
        30,
        "a VersionKept event",
    )


def _credentialed(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["store"]["secretRef"] = {"name": "store-creds"}
    return manifest


def test_a_missing_parent_in_a_credentialed_s3_store_fails_before_any_job(
    cluster: RunningSandbox,
    operator: Operator,
    credentialed_s3_store: tuple[str, dict[str, str]],
    trained: list[Path],
) -> None:
    uri, _ = credentialed_s3_store
    apply(cluster, _credentialed(modeldelta("step-2", uri, trained[2], parent="step-119")))
    body = wait_for(lambda: _phase(cluster, "step-2", "Failed"), 60, "Failed", operator.log)
    ready = _condition(body)
    assert ready["reason"] == "ParentNotFound"
    assert f"parent step-119 not found in {uri}" in ready["message"]
    assert jobs_of(cluster, "step-2") == []
    assert STORE_SECRET not in operator.log()


def test_deletion_policy_delete_removes_the_version_from_a_credentialed_s3_store(
    cluster: RunningSandbox,
    operator: Operator,
    credentialed_s3_store: tuple[str, dict[str, str]],
    trained: list[Path],
    tmp_path: Path,
) -> None:
    uri, credentials = credentialed_s3_store
    manifest = modeldelta("step-2", uri, trained[2], parent="step-1", deletionPolicy="Delete")
    apply(cluster, _credentialed(manifest))
    body = wait_for(
        lambda: (
            (got := _phase(cluster, "step-2", "Ready", "Failed"))
            and ("createdVersionId" in got["status"] or got["status"]["phase"] == "Failed")
            and got
        ),
        120,
        "Ready, created by its Job",
        operator.log,
    )
    assert body["status"]["phase"] == "Ready", body["status"]
    version = body["status"]["versionId"]
    assert version == checkpoint_version(trained[2])
    assert body["status"]["createdVersionId"] == version  # its Job, with the Secret's credentials

    cluster.kubectl("delete", "modeldelta", "step-2", "--wait=false")
    wait_for(lambda: get(cluster, "modeldelta", "step-2") is None, 60, "deleted", operator.log)

    left = Store(uri, credentials=credentials, cache_dir=tmp_path / "check").versions("tiny")
    assert version not in left
    assert checkpoint_version(trained[1]) in left
    wait_for(
        lambda: "VersionDeleted" in [e["reason"] for e in events_for(cluster, "step-2")],
        30,
        "a VersionDeleted event",  # Kopf posts Events after the handler, as the finalizer goes
    )
    assert STORE_SECRET not in operator.log()
