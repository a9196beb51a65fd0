"""Every pod the operator creates passes Pod Security "restricted", judged by the sandbox's
checker (the one that refuses pods on the sandbox, a port of kube-apiserver's), runs as the
images' non-root user, mounts no ServiceAccount token, and has requests and limits, whatever its
custom resource asks for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from controllers.test_jobs import delta
from controllers.test_rollout_analysis import template
from deltaroll.api.common import ResourceRequirements
from deltaroll.controllers import pod_defaults
from deltaroll.controllers.analysis.job import build_analysis_job
from deltaroll.controllers.modeldelta.jobs import build_job
from deltaroll.controllers.pod_defaults import DEFAULT_RESOURCES, IMAGE_USER
from deltaroll_sandbox.apiserver.pod_security.standards import LevelVersion, describe, evaluate

REPO = Path(__file__).resolve().parents[2]
ON_A_VOLUME = {
    "uri": "file:///ckpt/step-120",
    "volume": {"claimName": "ckpts", "mountPath": "/ckpt"},
}
GPU = {"limits": {"nvidia.com/gpu": 1, "memory": "64Gi"}, "requests": {"cpu": "8"}}


def worker_job(**spec: Any) -> dict[str, Any]:
    return build_job(delta(**spec))


def analysis_job(**job: Any) -> dict[str, Any]:
    provider = {"job": {"image": "eval:1", "command": ["sh", "-c", "true"], **job}}
    spec = template(provider=provider, successCondition=None)
    assert spec.provider.job is not None
    owner = {"metadata": {"name": "serving", "namespace": "ml", "uid": "u-1"}}
    return build_analysis_job(
        spec.provider.job, owner=owner, template="smoke", key="k", canary="v2", stable="v1",
        canary_pods=["10.0.0.7:8000"],
    )  # fmt: skip


JOBS = {
    "worker": lambda: worker_job(),
    "worker sharded, source on a volume, GPU": lambda: worker_job(
        source={"checkpoint": ON_A_VOLUME},
        job={"parallelism": 3, "resources": GPU, "serviceAccountName": "trainer"},
    ),
    "worker TRL import": lambda: worker_job(source={"trlPatch": {"uri": "s3://ckpts/patch"}}),
    "analysis": lambda: analysis_job(),
    "analysis with its own account and resources": lambda: analysis_job(
        serviceAccountName="eval", resources=GPU
    ),
}


@pytest.mark.parametrize("build", JOBS.values(), ids=list(JOBS))
def test_every_job_pod_passes_restricted_without_a_token(build: Any) -> None:
    pod = build()["spec"]["template"]
    failures = evaluate(LevelVersion("restricted"), pod.get("metadata") or {}, pod["spec"])
    assert failures == [], describe(failures)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] == IMAGE_USER
    for container in spec["containers"]:
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_resources_default_per_kind_and_a_resources_own_replace_them_name_by_name() -> None:
    def resources(job: dict[str, Any]) -> dict[str, Any]:
        return dict(job["spec"]["template"]["spec"]["containers"][0]["resources"])

    assert resources(worker_job()) == DEFAULT_RESOURCES["worker"].to_wire()
    assert resources(analysis_job()) == DEFAULT_RESOURCES["analysis"].to_wire()
    # GPU names cpu, memory and the GPU: nothing of the defaults is left
    assert resources(worker_job(job={"resources": GPU})) == GPU
    assert resources(analysis_job(resources=GPU)) == GPU
    # a name's request and limit come from one layer: no default limit under a bigger request
    own = {"requests": {"memory": "16Gi"}}
    assert resources(worker_job(job={"resources": own})) == {
        "requests": {"memory": "16Gi", "cpu": "1"},
        "limits": {"cpu": "4"},
    }


def test_the_admins_resources_lie_between_a_resources_own_and_the_built_in_ones() -> None:
    admin = ResourceRequirements(limits={"memory": "32Gi", "ephemeral-storage": "100Gi"})
    own = ResourceRequirements(requests={"cpu": "2"})
    assert pod_defaults.resources("worker", own, admin) == {
        "requests": {"cpu": "2"},
        "limits": {"memory": "32Gi", "ephemeral-storage": "100Gi"},
    }
    assert pod_defaults.resources("analysis", None, admin) == {
        "requests": {"cpu": "250m"},
        "limits": {"memory": "32Gi", "ephemeral-storage": "100Gi", "cpu": "1"},
    }


@pytest.mark.parametrize("image", ["worker", "agent", "operator"])
def test_the_pods_user_is_the_one_the_images_are_built_for(image: str) -> None:
    dockerfile = (REPO / "images" / f"Dockerfile.{image}").read_text()
    assert re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M) == [(str(IMAGE_USER),) * 2]
