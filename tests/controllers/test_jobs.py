"""The Job builder: a ModelDelta spec in, a batch/v1 Job manifest out (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from deltaroll.api import ModelDelta, parse_resource
from deltaroll.controllers.job_defaults import JobDefaults
from deltaroll.controllers.modeldelta.jobs import build_job, job_name, spec_digest

UID = "0b1c2d3e-0000-4000-8000-000000000001"


def delta(**spec: Any) -> ModelDelta:
    body = {
        "apiVersion": "deltaroll.dev/v1alpha1",
        "kind": "ModelDelta",
        "metadata": {"name": "step-120", "namespace": "ml", "uid": UID, "generation": 3},
        "spec": {
            "model": "qwen3",
            "store": {"uri": "s3://models/prod", "secretRef": {"name": "store-creds"}},
            "parent": "step-119",
            "source": {"checkpoint": {"uri": "s3://ckpts/run-7/step-120"}},
            **spec,
        },
    }
    parsed = parse_resource(body)
    assert isinstance(parsed, ModelDelta)
    return parsed


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_the_job_is_owned_by_the_modeldelta_and_runs_worker_compute() -> None:
    job = build_job(delta(), defaults=JobDefaults("worker", "registry/worker:1"))
    owner = job["metadata"]["ownerReferences"]
    assert owner == [
        {
            "apiVersion": "deltaroll.dev/v1alpha1",
            "kind": "ModelDelta",
            "name": "step-120",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    worker = container(job)
    assert worker["image"] == "registry/worker:1"
    assert worker["command"] == ["deltaroll"]
    assert worker["args"] == [
        "worker",
        "compute",
        "--store",
        "s3://models/prod",
        "--model",
        "qwen3",
        "--name",
        "step-120",
        "--level",
        "3",
        "--target",
        "s3://ckpts/run-7/step-120",
        "--parent",
        "step-119",
    ]
    assert job["metadata"]["namespace"] == "ml"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "completionMode" not in job["spec"]


def test_credentials_come_from_the_secret_by_reference_only() -> None:
    job = build_job(delta())
    worker = container(job)
    assert worker["envFrom"] == [{"secretRef": {"name": "store-creds"}}]
    assert all("valueFrom" not in e and "KEY" not in e["name"] for e in worker["env"])


def test_gpu_resources_and_scheduling_knobs_reach_the_pod() -> None:
    job = build_job(
        delta(
            job={
                "image": "me/worker:cuda",
                "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "64Gi"}},
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "serviceAccountName": "trainer",
                "priorityClassName": "batch-high",
                "backoffLimit": 4,
                "activeDeadlineSeconds": 3600,
                "ttlSecondsAfterFinished": 600,
            }
        )
    )
    pod = job["spec"]["template"]["spec"]
    assert container(job)["image"] == "me/worker:cuda"
    # memory is the Job's own, request and limit; cpu, which it does not name, the default's
    assert container(job)["resources"] == {
        "requests": {"cpu": "1"},
        "limits": {"nvidia.com/gpu": 1, "memory": "64Gi", "cpu": "4"},
    }
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert (pod["serviceAccountName"], pod["priorityClassName"]) == ("trainer", "batch-high")
    assert (
        job["spec"]["backoffLimit"],
        job["spec"]["activeDeadlineSeconds"],
        job["spec"]["ttlSecondsAfterFinished"],
    ) == (4, 3600, 600)


def test_a_permanent_worker_failure_fails_the_job_without_retries() -> None:
    rules = build_job(delta())["spec"]["podFailurePolicy"]["rules"]
    assert rules == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "worker", "operator": "In", "values": [3]},
        }
    ]


def test_parallelism_makes_an_indexed_job_with_one_completion_per_index() -> None:
    job = build_job(delta(job={"parallelism": 3}))
    assert (
        job["spec"]["completionMode"],
        job["spec"]["completions"],
        job["spec"]["parallelism"],
    ) == ("Indexed", 3, 3)
    assert container(job)["args"][-2:] == ["--shards", "3"]
    anchor = build_job(delta(parent=None, job={"parallelism": 3}))
    assert "completionMode" not in anchor["spec"] and "--shards" not in container(anchor)["args"]


def test_a_trl_patch_runs_worker_import_and_a_volume_is_mounted_read_only() -> None:
    job = build_job(
        delta(
            source={
                "trlPatch": {
                    "uri": "file:///ckpt/patches/step-120.safetensors",
                    "volume": {"claimName": "trainer-out", "mountPath": "/ckpt"},
                }
            },
            anchor=True,
        )
    )
    worker = container(job)
    assert worker["args"][:2] == ["worker", "import"]
    assert "--anchor" in worker["args"]
    assert worker["args"][-4:] == [
        "--patch",
        "file:///ckpt/patches/step-120.safetensors",
        "--parent",
        "step-119",
    ]
    assert {"name": "source", "mountPath": "/ckpt", "readOnly": True} in worker["volumeMounts"]
    assert {
        "name": "source",
        "persistentVolumeClaim": {"claimName": "trainer-out", "readOnly": True},
    } in job["spec"]["template"]["spec"]["volumes"]


def test_the_job_name_follows_the_spec_and_fits_a_label() -> None:
    first, same = build_job(delta()), build_job(delta())
    changed = build_job(delta(encoding={"zstdLevel": 9}))
    assert first["metadata"]["name"] == same["metadata"]["name"]
    assert first["metadata"]["name"] != changed["metadata"]["name"]
    assert spec_digest(delta().spec) != spec_digest(delta(encoding={"zstdLevel": 9}).spec)
    long = job_name("a" * 200, "0123456789abcdef")
    assert len(long) <= 63 and long.endswith("-0123456789")


@pytest.mark.parametrize("name", ["x" * 60 + "-b", "step.120"])
def test_labels_are_valid_label_values(name: str) -> None:
    job = build_job(
        delta().model_copy(update={"metadata": {"name": name, "namespace": "ml", "uid": UID}})
    )
    for value in job["metadata"]["labels"].values():
        assert len(value) <= 63 and value[-1].isalnum()
    assert len(job["metadata"]["name"]) <= 63
