"""The analysis Job: one Job per measurement; Complete is a success, Failed a failure.

The Job is named from the ModelDeployment, the template, the canary version, the step and the
measurement's number, so a reconcile that runs twice (or an operator restarted while the Job
runs) finds the same Job instead of starting another. It is owned by the ModelDeployment, so it
goes when the deployment does. The container learns what to judge from its environment:
DELTAROLL_CANARY_VERSION, DELTAROLL_STABLE_VERSION and DELTAROLL_CANARY_PODS (podIP:port,
comma-separated). The pod passes Pod Security "restricted", mounts no ServiceAccount token and
has resources (:mod:`deltaroll.controllers.pod_defaults`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from deltaroll.api.modeldeployment import KIND, AnalysisJob
from deltaroll.controllers import pod_defaults
from deltaroll.controllers.job_defaults import RELEASE_ANALYSIS_DEFAULTS, JobDefaults
from deltaroll.controllers.modeldelta.jobs import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    controller_reference,
    label_value,
)

LABEL_MODELDEPLOYMENT: Final = "deltaroll.dev/modeldeployment"
ANALYSIS_COMPONENT: Final = "analysis"
"""The component label of analysis Jobs: the operator watches them to take measurements."""
CONTAINER: Final = "analysis"

JobOutcome = Literal["Successful", "Failed"]


def analysis_job_name(deployment: str, template: str, key: str) -> str:
    """A DNS-1123 name, at most 63 characters, unique per (deployment, template, key)."""
    digest = hashlib.sha256(f"{deployment}/{template}/{key}".encode()).hexdigest()[:10]
    stem = f"{deployment[:30]}-{template[:20]}".rstrip("-.")
    return f"{stem}-{digest}"


def build_analysis_job(
    job: AnalysisJob,
    *,
    owner: Mapping[str, Any],
    template: str,
    key: str,
    canary: str,
    stable: str,
    canary_pods: Sequence[str],
    defaults: JobDefaults = RELEASE_ANALYSIS_DEFAULTS,
) -> dict[str, Any]:
    """The Job manifest for one measurement of ``template`` (``key`` names the measurement)."""
    meta = owner["metadata"]
    labels = {
        LABEL_MODELDEPLOYMENT: label_value(str(meta["name"])),
        LABEL_COMPONENT: ANALYSIS_COMPONENT,
        LABEL_MANAGED_BY: "deltaroll",
    }
    env = [e.to_wire() for e in job.env or []] + [
        {"name": "DELTAROLL_CANARY_VERSION", "value": canary},
        {"name": "DELTAROLL_STABLE_VERSION", "value": stable},
        {"name": "DELTAROLL_CANARY_PODS", "value": ",".join(canary_pods)},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": defaults.image_of(job),
        "env": env,
        "securityContext": pod_defaults.container_security_context(),
        "resources": defaults.resources_of(job),
    }
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    if job.image_pull_policy is not None:
        container["imagePullPolicy"] = job.image_pull_policy
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    optional = {
        "serviceAccountName": defaults.service_account_of(job),
        "priorityClassName": job.priority_class_name,
        "nodeSelector": job.node_selector,
        "tolerations": [t.to_wire() for t in job.tolerations] if job.tolerations else None,
        "imagePullSecrets": [s.to_wire() for s in job.image_pull_secrets]
        if job.image_pull_secrets
        else None,
    }
    pod.update({k: v for k, v in optional.items() if v is not None})
    spec: dict[str, Any] = {
        "backoffLimit": job.backoff_limit,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_defaults.locked_down(pod)},
    }
    if job.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = job.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": analysis_job_name(str(meta["name"]), template, key),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [controller_reference(KIND, meta)],
        },
        "spec": spec,
    }


def job_outcome(job: Mapping[str, Any]) -> JobOutcome | None:
    """Successful once the Job is Complete, Failed once it failed, None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Successful"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return None
