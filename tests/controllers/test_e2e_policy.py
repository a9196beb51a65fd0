"""Issue 15 as a tenant tries it on the sandbox, with the real operator: what the admin's policy
does not allow is refused before anything is created or opened, a store is read with the
tenant's credentials and never the operator's, and a ModelDelta deletes only what it created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controllers import modeldelta_world as world
from controllers.modeldelta_world import (
    OPERATOR_KEY,
    TEAM_B_KEYS,
    Gate,
    Operator,
    apply,
    events_for,
    get,
    wait_for,
)
from deltaroll.api.job_result import CREATED_FIELD
from deltaroll.api.job_result import DEFAULT_PATH as TERMINATION_PATH
from deltaroll.api.job_result import PATH_ENV as TERMINATION_ENV
from deltaroll.checkpoint import checkpoint_version
from deltaroll.controllers import pod_defaults
from deltaroll.store import Store
from deltaroll_demo.manifests import modeldeployment_manifest
from deltaroll_sandbox.testing import RunningSandbox

pytestmark = pytest.mark.slow


def _phase(cluster: RunningSandbox, name: str) -> str | None:
    return ((get(cluster, "modeldelta", name) or {}).get("status") or {}).get("phase")


def _pod_phase(cluster: RunningSandbox, name: str) -> str | None:
    return ((get(cluster, "pod", name) or {}).get("status") or {}).get("phase")


def _failed(cluster: RunningSandbox, name: str) -> dict[str, Any] | None:
    body = get(cluster, "modeldelta", name)
    return body if ((body or {}).get("status") or {}).get("phase") == "Failed" else None


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


@contextmanager
def operator_with_identity(
    cluster: RunningSandbox, tmp_path: Path, gate: Gate, store_prefixes: list[str]
) -> Iterator[Operator]:
    """The operator, its environment holding a cloud identity that reaches the bucket behind
    ``gate``, under a policy allowing ``store_prefixes``."""
    running = Operator(
        cluster,
        tmp_path / "operator.log",
        policy={"default": {"storePrefixes": store_prefixes}},
        env={
            "AWS_ENDPOINT_URL": gate.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": OPERATOR_KEY,
            "AWS_SECRET_ACCESS_KEY": "operator-secret",
        },
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_job_image_or_service_account_the_admin_did_not_allow_is_refused(
    cluster: RunningSandbox, operator: Operator, tmp_path: Path, trained: list[Path]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    job = {"image": "docker.io/attacker/miner:1", "serviceAccountName": "cluster-admin"}
    apply(cluster, world.modeldelta("step-1", store, trained[1], job=job))

    body = wait_for(lambda: _failed(cluster, "step-1"), 60, "Failed", operator.log)

    ready, stalled = _conditions(body)["Ready"], _conditions(body)["Stalled"]
    assert (ready["status"], ready["reason"]) == ("False", "PolicyDenied")
    assert (stalled["status"], stalled["reason"]) == ("True", "PolicyDenied")
    assert "spec.job.image docker.io/attacker/miner:1 is not allowed" in ready["message"]
    assert "spec.job.serviceAccountName cluster-admin is not allowed" in ready["message"]
    assert world.jobs_of(cluster, "step-1") == []
    world.wait_for_warning(cluster, "step-1", "PolicyDenied")


def test_another_teams_bucket_is_refused_and_never_opened(
    cluster: RunningSandbox, tmp_path: Path, trained: list[Path], team_b_bucket: tuple[str, Gate]
) -> None:
    uri, gate = team_b_bucket
    with operator_with_identity(cluster, tmp_path, gate, ["s3://team-a/", "file:///"]) as operator:
        apply(cluster, world.modeldelta("step-0", uri, trained[0], parent=None))
        body = wait_for(lambda: _failed(cluster, "step-0"), 60, "Failed", operator.log)

    ready = _conditions(body)["Ready"]
    assert ready["reason"] == "PolicyDenied"
    assert f"spec.store.uri {uri} is not allowed" in ready["message"]
    assert "s3://team-a/" in ready["message"]  # what the tenant may use instead
    assert gate.sent == b""  # the bucket was never asked anything


def test_a_store_without_secret_ref_is_not_read_with_the_operators_identity(
    cluster: RunningSandbox, tmp_path: Path, trained: list[Path], team_b_bucket: tuple[str, Gate]
) -> None:
    uri, gate = team_b_bucket
    anchor = world.modeldelta("step-0", uri, trained[0], parent=None)
    with operator_with_identity(cluster, tmp_path, gate, ["s3://", "file:///"]) as running:
        apply(cluster, anchor)
        for until, what in (
            (lambda: gate.sent, "a read"),
            (lambda: _phase(cluster, "step-0"), "a phase"),
        ):
            wait_for(until, 60, what, running.log)

    assert b"GET " in gate.sent
    assert OPERATOR_KEY.encode() not in gate.sent  # anonymous, never signed as the operator


def _modeldeployment(uri: str, version: str = "step-0", **spec: Any) -> dict[str, Any]:
    """A ModelDeployment of ``version`` in ``uri`` (no secretRef unless ``store`` says) selecting
    no pod yet."""
    labels = {"app": "no-pods-yet"}
    return modeldeployment_manifest("serving", uri, version, labels, model="tiny", **spec)


def _deployment_status(cluster: RunningSandbox) -> dict[str, Any]:
    return dict((get(cluster, "modeldeployment", "serving") or {}).get("status") or {})


def _looked_up(cluster: RunningSandbox) -> dict[str, Any] | None:
    """The status once the store answered spec.version's look-up: found, or refused."""
    status = _deployment_status(cluster)
    found = status.get("stableVersion") or "was refused" in str(status.get("message") or "")
    return status if found else None


def _message(cluster: RunningSandbox) -> str:
    return str(_deployment_status(cluster).get("message") or "")


def test_a_modeldeployment_without_secret_ref_looks_up_its_version_anonymously(
    cluster: RunningSandbox, tmp_path: Path, team_b_bucket: tuple[str, Gate]
) -> None:
    """spec.version no ModelDelta publishes is looked up in the store (target.from_store): as the
    tenant, never with the operator's identity (the bucket refuses anonymous reads)."""
    uri, gate = team_b_bucket
    with operator_with_identity(cluster, tmp_path, gate, ["s3://", "file:///"]) as running:
        apply(cluster, _modeldeployment(uri))
        status = wait_for(lambda: _looked_up(cluster), 60, "the look-up's answer", running.log)

    assert b"GET " in gate.sent
    assert OPERATOR_KEY.encode() not in gate.sent  # anonymous, never signed as the operator
    assert not status.get("stableVersion"), status  # the operator's identity would find it


def test_a_modeldeployments_signature_check_does_not_borrow_the_operators_identity(
    cluster: RunningSandbox, tmp_path: Path, trained: list[Path], team_b_bucket: tuple[str, Gate]
) -> None:
    """With spec.verification the operator reads spec.version's signature records before moving
    a pod (modeldeployment/signature.py): as the tenant, never with its own identity. The
    tenant's ModelDelta (with its Secret) makes step-0 Ready, so its ModelDeployment (no
    secretRef) gets to the signature check without reading the store first."""
    from deltaroll.store.signing import generate_key_pair

    uri, gate = team_b_bucket
    world.create_secret(cluster, "team-b-creds", {**TEAM_B_KEYS, "AWS_ENDPOINT_URL": gate.endpoint})
    anchor = world.modeldelta("step-0", uri, trained[0], parent=None)
    anchor["spec"]["store"]["secretRef"] = {"name": "team-b-creds"}
    generate_key_pair(tmp_path / "publisher.pem", tmp_path / "publisher.pub")
    verification = {"publicKeys": [(tmp_path / "publisher.pub").read_text()]}
    with operator_with_identity(cluster, tmp_path, gate, ["s3://", "file:///"]) as running:
        apply(cluster, anchor)
        wait_for(lambda: _phase(cluster, "step-0") == "Ready", 120, "step-0 Ready", running.log)
        before = len(gate.sent)  # what the ModelDelta read, with its Secret
        apply(cluster, _modeldeployment(uri, verification=verification))
        wait_for(
            lambda: "sign" in _message(cluster),  # not signed, or cannot be checked
            60,
            "the signature records read",
            running.log,
        )

    checked = bytes(gate.sent[before:])
    assert b"GET " in checked  # the signature check asked the store
    assert OPERATOR_KEY.encode() not in checked  # anonymous, never signed as the operator


def test_a_modeldeployment_reads_its_store_with_its_secret(
    cluster: RunningSandbox,
    operator: Operator,
    credentialed_s3_store: tuple[str, dict[str, str]],
) -> None:
    uri, _ = credentialed_s3_store
    secret_store = {"uri": uri, "secretRef": {"name": "store-creds"}}
    deployment = _modeldeployment(uri, version="step-1", store=secret_store)
    apply(cluster, deployment)

    def healthy() -> dict[str, Any] | None:
        status = (get(cluster, "modeldeployment", "serving") or {}).get("status") or {}
        return status if status.get("stableVersion") == "step-1" else None

    status = wait_for(healthy, 60, "step-1 found in the store", operator.log)
    assert status["phase"] == "Healthy", status


def test_deleting_a_modeldelta_keeps_a_version_it_did_not_create(
    cluster: RunningSandbox, operator: Operator, tmp_path: Path, trained: list[Path]
) -> None:
    store = f"file://{tmp_path / 'shared-store'}"
    theirs = Store(store, cache_dir=tmp_path / "cache").push("tiny", trained[0], name="step-0")
    apply(
        cluster, world.modeldelta("step-0", store, trained[0], parent=None, deletionPolicy="Delete")
    )
    wait_for(lambda: _phase(cluster, "step-0") == "Ready", 60, "Ready (found)", operator.log)

    cluster.kubectl("delete", "modeldelta", "step-0", "--wait=false")
    wait_for(lambda: get(cluster, "modeldelta", "step-0") is None, 60, "deleted", operator.log)

    assert theirs.version == checkpoint_version(trained[0])
    assert theirs.version in Store(store, cache_dir=tmp_path / "check").versions("tiny")
    wait_for(
        lambda: any(e["reason"] == "VersionKept" for e in events_for(cluster, "step-0")),
        30,
        "a VersionKept Event",
    )


FORGE = "import os, sys; open(os.environ[sys.argv[1]], 'w').write(sys.argv[2])"


def _forged_pod(job: dict[str, Any], message: str) -> dict[str, Any]:
    """A pod any user who may create pods in the namespace can create: the Job's pod labels, an
    ownerReference naming the Job as controller (nothing checks who sets one), and a container
    that ends with ``message`` as its termination message."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "forged-worker",
            "namespace": meta["namespace"],
            "labels": dict(job["spec"]["template"]["metadata"]["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": pod_defaults.locked_down(
            {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "worker",
                        "image": "docker.io/tenant/anything:1",
                        "command": ["python", "-c", FORGE, TERMINATION_ENV, message],
                        "env": [{"name": TERMINATION_ENV, "value": TERMINATION_PATH}],
                        "terminationMessagePath": TERMINATION_PATH,
                        "securityContext": pod_defaults.container_security_context(),
                        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    }
                ],
            }
        ),
    }


def test_a_forged_created_message_does_not_get_another_teams_version_deleted(
    cluster: RunningSandbox, operator: Operator, tmp_path: Path, trained: list[Path]
) -> None:
    """A tenant's ModelDelta names weights another team published; its Job finds them there.
    The tenant then makes a pod that looks like the Job's and says ``created: true``, and
    deletes the ModelDelta: the operator must not believe the message and remove the version."""
    store = f"file://{tmp_path / 'shared-store'}"
    theirs = Store(store, cache_dir=tmp_path / "cache").push("tiny", trained[0], name="step-0")
    # Under a name of its own, so its Job runs (and finds the weights published already).
    apply(
        cluster, world.modeldelta("mine", store, trained[0], parent=None, deletionPolicy="Delete")
    )
    wait_for(lambda: _phase(cluster, "mine") == "Ready", 60, "Ready", operator.log)
    [job] = world.jobs_of(cluster, "mine")  # done; its worker said it created nothing
    forged = {"ok": True, "command": "compute", "version": theirs.version, CREATED_FIELD: True}
    apply(cluster, _forged_pod(job, json.dumps(forged)))
    forged_phase = lambda: (get(cluster, "pod", "forged-worker") or {}).get("status", {})  # noqa: E731
    wait_for(
        lambda: forged_phase().get("phase") == "Succeeded", 60, "forged pod done", operator.log
    )

    cluster.kubectl("delete", "modeldelta", "mine", "--wait=false")
    wait_for(lambda: get(cluster, "modeldelta", "mine") is None, 60, "deleted", operator.log)

    assert theirs.version in Store(store, cache_dir=tmp_path / "check").versions("tiny")
    reasons = {e["reason"] for e in events_for(cluster, "mine")}
    assert "VersionDeleted" not in reasons
