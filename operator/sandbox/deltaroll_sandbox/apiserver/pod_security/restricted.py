"""The restricted checks of the Pod Security Standards (k8s.io/pod-security-admission/policy,
``check_*.go`` at level restricted): hardening on top of baseline.
"""

from __future__ import annotations

from typing import Final

from deltaroll_sandbox.apiserver.pod_security.fields import (
    Obj,
    containers,
    named_containers,
    offenders,
    plural,
    quote_all,
    security_context,
)


def privilege_escalation(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad = [
        c.get("name", "")
        for c in containers(spec)
        if security_context(c).get("allowPrivilegeEscalation") is not False
    ]
    if not bad:
        return None
    return "allowPrivilegeEscalation != false", (
        f"{named_containers(bad)} must set securityContext.allowPrivilegeEscalation=false"
    )


def capabilities_restricted(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    missing_drop, adding, forbidden = [], [], set()
    for container in containers(spec):
        capabilities = security_context(container).get("capabilities")
        if not isinstance(capabilities, dict):
            missing_drop.append(container.get("name", ""))
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing_drop.append(container.get("name", ""))
        extra = [c for c in capabilities.get("add") or [] if c != "NET_BIND_SERVICE"]
        if extra:
            adding.append(container.get("name", ""))
            forbidden.update(extra)
    details = []
    if missing_drop:
        details.append(
            f'{named_containers(missing_drop)} must set securityContext.capabilities.drop=["ALL"]'
        )
    if adding:
        details.append(
            f"{named_containers(adding)} must not include {quote_all(sorted(forbidden))} "
            "in securityContext.capabilities.add"
        )
    return ("unrestricted capabilities", "; ".join(details)) if details else None


_RESTRICTED_VOLUMES: Final = frozenset((
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "image", "persistentVolumeClaim", "projected", "secret",
))  # fmt: skip
#: The volume types named in the message, in kube-apiserver's order; any other is "unknown".
_NAMED_VOLUME_TYPES: Final = (
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
    "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
    "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk",
    "portworxVolume", "scaleIO", "storageos",
)  # fmt: skip


def restricted_volumes(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    bad, types = [], set()
    for volume in spec.get("volumes") or []:
        sources = {k for k, v in volume.items() if k != "name" and v is not None}
        # A volume without a source is defaulted to an emptyDir before admission.
        if not sources or sources & _RESTRICTED_VOLUMES:
            continue
        bad.append(volume.get("name", ""))
        types.add(next((t for t in _NAMED_VOLUME_TYPES if t in sources), "unknown"))
    if not bad:
        return None
    return "restricted volume types", (
        f"{plural('volume', 'volumes', len(bad))} {quote_all(bad)} "
        f"{plural('uses', 'use', len(bad))} "
        f"{plural('restricted volume type', 'restricted volume types', len(types))} "
        f"{quote_all(sorted(types))}"
    )


def run_as_non_root(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    setters, unset, _ = offenders(spec, lambda c: c.get("runAsNonRoot"), lambda v: v is not True)
    if setters:
        return "runAsNonRoot != true", (
            f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false"
        )
    if unset and security_context(spec).get("runAsNonRoot") is not True:
        return "runAsNonRoot != true", (
            f"pod or {named_containers(unset)} must set securityContext.runAsNonRoot=true"
        )
    return None


def run_as_user(meta: Obj, spec: Obj) -> tuple[str, str] | None:
    setters, _, _ = offenders(spec, lambda context: context.get("runAsUser"), lambda v: v == 0)
    if not setters:
        return None
    return "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0"
