"""What every pod the operator creates gets, whatever its custom resource asks for.

- Pod Security "restricted": non-root as the user of the Deltaroll images (``USER 10001`` in
  images/Dockerfile.*; set explicitly, so an analysis image built to run as root still runs as
  10001), no privilege escalation, every capability dropped, the runtime's seccomp profile. A
  namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` admits these pods.
- No ServiceAccount token: neither the worker nor an analysis Job talks to the Kubernetes API
  (the worker reads and writes the store; an analysis Job is handed the pods it judges), so a
  compromised Job has no Kubernetes identity to use.
- Resources, per resource name (cpu, memory, nvidia.com/gpu, ...): the custom resource's own,
  else the admin's policy's (:class:`deltaroll.api.policy.JobPolicy`), else
  :data:`DEFAULT_RESOURCES` (a quota'd namespace refuses pods without them, and a runaway Job
  should meet a limit). A name's request and limit always come from the same layer, so a default
  limit never lands under a request the resource asked for.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from deltaroll.api.common import ResourceRequirements

IMAGE_USER: Final = 10001
JobKind = Literal["worker", "analysis"]

#: Requests and limits of a Job's container when its custom resource names none: enough for the
#: worker to diff a model of tens of billions of parameters one tensor at a time on CPU, and for
#: an analysis script; a resource name the admin's policy or a ModelDelta's or analysis template's
#: ``resources`` name (in requests or limits) replaces that name's request and limit here.
DEFAULT_RESOURCES: Final[dict[JobKind, ResourceRequirements]] = {
    "worker": ResourceRequirements(
        requests={"cpu": "1", "memory": "2Gi"}, limits={"cpu": "4", "memory": "8Gi"}
    ),
    "analysis": ResourceRequirements(
        requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "2Gi"}
    ),
}


def pod_security_context() -> dict[str, Any]:
    """The pod's securityContext: every container runs as the images' non-root user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_USER,
        "runAsGroup": IMAGE_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """A container's securityContext: the fields "restricted" wants on every container."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def resources(
    kind: JobKind,
    requested: ResourceRequirements | None,
    admin: ResourceRequirements | None = None,
) -> dict[str, Any]:
    """The container's resources: name by name, the first of ``requested``, the admin's
    defaults and :data:`DEFAULT_RESOURCES` that names it gives its request and limit."""
    merged: dict[str, dict[str, Any]] = {"requests": {}, "limits": {}}
    named: set[str] = set()
    for layer in (requested, admin, DEFAULT_RESOURCES[kind]):
        wire = layer.to_wire() if layer is not None else {}
        names = {name for part in merged for name in wire.get(part) or {}} - named
        for part in merged:
            merged[part].update((n, v) for n, v in (wire.get(part) or {}).items() if n in names)
        named |= names
    return {part: values for part, values in merged.items() if values}


def locked_down(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` (a pod spec) with the security context above and no ServiceAccount token."""
    return {
        **pod,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
    }
