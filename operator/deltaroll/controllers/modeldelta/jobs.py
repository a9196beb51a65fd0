"""The batch/v1 Job of a ModelDelta, built from its spec. Pure: a spec in, a manifest out.

The Job is owned by the ModelDelta (a controller ownerReference), so deleting the ModelDelta
collects the Job and its pods. Its name carries a digest of the spec, so a changed spec gets a
new Job (the planner deletes the old one) and an unchanged spec always finds its own. The store
credentials reach the worker only through ``envFrom`` of the referenced Secret: never in the
manifest, never in logs. A worker exiting with the permanent-failure code fails the Job at once
(podFailurePolicy) instead of burning retries on bad input. The pod passes Pod Security
"restricted", mounts no ServiceAccount token and has resources
(:mod:`deltaroll.controllers.pod_defaults`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from deltaroll.api.common import API_VERSION
from deltaroll.api.job_result import DEFAULT_PATH as TERMINATION_PATH
from deltaroll.api.job_result import EXIT_PERMANENT, JOB_ENV
from deltaroll.api.job_result import PATH_ENV as TERMINATION_ENV
from deltaroll.api.modeldelta import KIND, ModelDelta, ModelDeltaSpec
from deltaroll.controllers import pod_defaults
from deltaroll.controllers.job_defaults import RELEASE_DEFAULTS, JobDefaults

CONTAINER: Final = "worker"
WORK_DIR: Final = "/work"
SOURCE_MOUNT: Final = "source"
LABEL_MODELDELTA: Final = "deltaroll.dev/modeldelta"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "deltaroll-operator"
ANNOTATION_SPEC_DIGEST: Final = "deltaroll.dev/spec-digest"
ANNOTATION_GENERATION: Final = "deltaroll.dev/generation"
_MAX_JOB_NAME: Final = 63  # Job names end up in the pods' job-name label


def label_value(name: str) -> str:
    """An object's name cut to fit a label value (63 characters, no trailing ``-`` or ``.``)."""
    return name[:63].rstrip("-.")


def job_selector(modeldelta_name: str) -> str:
    """The label selector of a ModelDelta's Jobs and their pods."""
    return f"{LABEL_MODELDELTA}={label_value(modeldelta_name)}"


def controller_reference(kind: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference to a Deltaroll object of ``kind`` with ``meta``."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def spec_digest(spec: ModelDeltaSpec) -> str:
    """A digest of the whole spec: a different digest means a different Job."""
    canonical = json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def content_digest(spec: ModelDeltaSpec) -> str:
    """A digest of what decides the published weights (not how the Job runs)."""
    content = spec.to_wire()
    content.pop("job", None)
    content.pop("deletionPolicy", None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def job_name(modeldelta_name: str, digest: str) -> str:
    """``<name>-<digest10>``, the name cut so the whole fits a label value."""
    head = modeldelta_name[: _MAX_JOB_NAME - 11].rstrip("-.")
    return f"{head}-{digest[:10]}"


def sharded(delta: ModelDelta) -> bool:
    """Whether the work is split across an Indexed Job: only a diff against a parent splits
    (an anchor or a TRL import runs as one pod whatever spec.job.parallelism says)."""
    spec = delta.spec
    return (
        spec.job.parallelism > 1 and spec.parent is not None and spec.source.checkpoint is not None
    )


def worker_args(delta: ModelDelta) -> list[str]:
    """The ``deltaroll worker ...`` command line that publishes this ModelDelta's version."""
    spec = delta.spec
    common = ["--store", spec.store.uri, "--model", spec.model, "--name", delta.version_name]
    common += ["--level", str(spec.encoding.zstd_level)]
    if spec.anchor:
        common.append("--anchor")
    if spec.source.trl_patch is not None:
        assert spec.parent is not None  # the API refuses a trlPatch without a parent
        return [
            "worker",
            "import",
            *common,
            "--patch",
            spec.source.trl_patch.uri,
            "--parent",
            spec.parent,
        ]
    assert spec.source.checkpoint is not None  # exactly one source, the API says
    parent = ["--parent", spec.parent] if spec.parent is not None else []
    return ["worker", "compute", *common, "--target", spec.source.checkpoint.uri, *parent]


def build_job(delta: ModelDelta, *, defaults: JobDefaults = RELEASE_DEFAULTS) -> dict[str, Any]:
    """The Job manifest for ``delta`` (which must carry metadata name, namespace and uid), with
    the admin's ``defaults`` for what its spec.job leaves unset."""
    meta, spec, job = delta.metadata, delta.spec, delta.spec.job
    digest = spec_digest(spec)
    labels = {
        LABEL_MODELDELTA: label_value(str(meta["name"])),
        LABEL_COMPONENT: "worker",
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": job.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [EXIT_PERMANENT],
                    },
                }
            ]
        },
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": _pod_spec(delta, defaults, digest),
        },
    }
    if sharded(delta):
        job_spec |= {
            "completionMode": "Indexed",
            "completions": job.parallelism,
            "parallelism": job.parallelism,
        }
    if job.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = job.active_deadline_seconds
    if job.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = job.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(str(meta["name"]), digest),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {
                ANNOTATION_SPEC_DIGEST: digest,
                ANNOTATION_GENERATION: str(meta.get("generation", 0)),
            },
            "ownerReferences": [controller_reference(KIND, meta)],
        },
        "spec": job_spec,
    }


def _pod_spec(delta: ModelDelta, defaults: JobDefaults, digest: str) -> dict[str, Any]:
    meta, spec, job = delta.metadata, delta.spec, delta.spec.job
    args = worker_args(delta)
    if sharded(delta):
        args += ["--shards", str(job.parallelism)]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": defaults.image_of(job),
        "command": ["deltaroll"],
        "args": args,
        "env": [
            {"name": "DELTAROLL_WORK_DIR", "value": WORK_DIR},
            {"name": "DELTAROLL_LOG_FORMAT", "value": "json"},
            {"name": "HF_HOME", "value": f"{WORK_DIR}/hf-home"},
            # Said explicitly so a kubelet that relocates the path (the sandbox's) can map it.
            {"name": TERMINATION_ENV, "value": TERMINATION_PATH},
            *defaults.env_list(),
            {"name": JOB_ENV, "value": f"{meta['namespace']}/{job_name(meta['name'], digest)}"},
        ],
        "terminationMessagePath": TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
        ],
        "securityContext": {
            **pod_defaults.container_security_context(),
            "readOnlyRootFilesystem": True,  # it writes only to its emptyDirs
        },
        "resources": defaults.resources_of(job),
    }
    if job.image_pull_policy is not None:
        container["imagePullPolicy"] = job.image_pull_policy
    if spec.store.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.store.secret_ref.name}}]
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    source = spec.source.checkpoint or spec.source.trl_patch
    if source is not None and source.volume is not None:
        container["volumeMounts"].append(
            {"name": SOURCE_MOUNT, "mountPath": source.volume.mount_path, "readOnly": True}
        )
        volumes.append(
            {
                "name": SOURCE_MOUNT,
                "persistentVolumeClaim": {"claimName": source.volume.claim_name, "readOnly": True},
            }
        )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
    }
    optional = {
        "serviceAccountName": defaults.service_account_of(job),
        "priorityClassName": job.priority_class_name,
        "nodeSelector": job.node_selector,
        "tolerations": [t.to_wire() for t in job.tolerations] if job.tolerations else None,
        "imagePullSecrets": [s.to_wire() for s in job.image_pull_secrets]
        if job.image_pull_secrets
        else None,
    }
    pod.update({key: value for key, value in optional.items() if value is not None})
    return pod_defaults.locked_down(pod)
