"""Defaults and checks of the builtin kinds the sandbox runs (the parts of their Go
``PrepareForCreate``/``Validate`` strategies that clients notice): Secrets' ``stringData``,
Pods' defaults and immutable spec, Jobs' and Deployments' defaults and selectors, Namespaces'
phase and the deletion of everything inside a deleted namespace.
"""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.selectors import match_labels
from deltaroll_sandbox.apiserver.statuses import invalid
from deltaroll_sandbox.apiserver.store import DEPLOYMENTS, JOBS, PODS, Obj, Store, WatchEvent

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAMESPACES = ("", "namespaces")
SECRETS = ("", "secrets")


def _default_containers(containers: list[dict[str, Any]]) -> None:
    for container in containers:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("resources", {})


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("securityContext", {})
    _default_containers(spec.get("containers") or [])
    _default_containers(spec.get("initContainers") or [])


def _check_pod_spec(kind: str, name: str, spec: Any, prefix: str, group: str) -> None:
    """Containers and volumes need unique DNS-label names (the kubelet makes folders of them)."""
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise invalid(kind, name, [(f"{prefix}containers", "Required value")], group)
    problems: list[tuple[str, str]] = []
    for field in ("containers", "initContainers", "volumes"):
        seen: set[str] = set()
        for index, item in enumerate(spec.get(field) or []):
            where = f"{prefix}{field}[{index}].name"
            item_name = item.get("name") if isinstance(item, dict) else None
            if not item_name:
                problems.append((where, "Required value"))
            elif (
                not isinstance(item_name, str)
                or len(item_name) > 63
                or not _DNS_LABEL.match(item_name)
            ):
                problems.append(
                    (where, f'Invalid value: "{item_name}": must be a lowercase RFC 1123 label')
                )
            elif item_name in seen:
                problems.append((where, f'Duplicate value: "{item_name}"'))
            else:
                seen.add(item_name)
    if problems:
        raise invalid(kind, name, problems, group)


class BuiltinAdmission:
    """Defaulting and validation for Secrets, Pods, Jobs, Deployments, Namespaces."""

    def admit(self, store: Store, rtype: ResourceType, obj: Obj, old: Obj | None) -> None:
        key = rtype.storage_key
        name = obj["metadata"].get("name", "")
        if key == SECRETS:
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) or {}
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
            obj["type"] = obj.get("type") or "Opaque"
        elif key == NAMESPACES:
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            if old is None:
                obj["status"] = {"phase": "Active"}
        elif key == PODS:
            _check_pod_spec("Pod", name, obj.get("spec"), "spec.", "")
            _default_pod_spec(obj["spec"])
            if old is None:
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            else:
                self._check_pod_update(obj, old)
        elif key == JOBS:
            self._admit_job(obj, old)
        elif key == DEPLOYMENTS:
            self._admit_deployment(obj)

    @staticmethod
    def _check_pod_update(obj: Obj, old: Obj) -> None:
        """Pod specs are immutable except container images and a few scheduling fields."""

        def mutable_erased(spec: dict[str, Any]) -> dict[str, Any]:
            spec = copy.deepcopy(spec)
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                container.pop("image", None)
            for field in (
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "nodeName",
            ):
                spec.pop(field, None)
            return spec

        if mutable_erased(obj["spec"]) != mutable_erased(old["spec"]):
            raise invalid(
                "Pod",
                obj["metadata"]["name"],
                [
                    (
                        "spec",
                        "Forbidden: pod updates may not change fields other than "
                        "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                        "`spec.tolerations` (only additions to existing tolerations) "
                        "or `spec.terminationGracePeriodSeconds`",
                    )
                ],
            )

    @staticmethod
    def _admit_job(obj: Obj, old: Obj | None) -> None:
        name = obj["metadata"].get("name", "")
        spec = obj.get("spec") or {}
        obj["spec"] = spec
        template = spec.get("template") or {}
        _check_pod_spec("Job", name, template.get("spec"), "spec.template.spec.", "batch")
        policy = template["spec"].get("restartPolicy")
        if policy not in ("Never", "OnFailure"):
            raise invalid(
                "Job",
                name,
                [
                    (
                        "spec.template.spec.restartPolicy",
                        f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                    )
                ],
                "batch",
            )
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        if old is None:
            uid = obj["metadata"]["uid"]
            labels = {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
            spec.setdefault(
                "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            )
            template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        elif spec.get("template") != (old.get("spec") or {}).get("template"):
            raise invalid(
                "Job", name, [("spec.template", "Invalid value: field is immutable")], "batch"
            )
        _default_pod_spec(template["spec"])

    @staticmethod
    def _admit_deployment(obj: Obj) -> None:
        name = obj["metadata"].get("name", "")
        spec = obj.get("spec") or {}
        obj["spec"] = spec
        template = spec.get("template") or {}
        _check_pod_spec("Deployment", name, template.get("spec"), "spec.template.spec.", "apps")
        if not spec.get("selector"):
            raise invalid("Deployment", name, [("spec.selector", "Required value")], "apps")
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not match_labels(spec["selector"], labels):
            raise invalid(
                "Deployment",
                name,
                [
                    (
                        "spec.template.metadata.labels",
                        "Invalid value: `selector` does not match template `labels`",
                    )
                ],
                "apps",
            )
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        _default_pod_spec(template["spec"])

    def written(self, store: Store, rtype: ResourceType, event: WatchEvent) -> None:
        if rtype.storage_key != NAMESPACES or event.type != "DELETED":
            return
        namespace = event.obj["metadata"]["name"]
        for served in list(store.registry):
            if not served.namespaced or served.version != _first_version(store, served):
                continue
            for obj in store.list_objects(served, namespace):
                store.purge(served, namespace, obj["metadata"]["name"])


def _first_version(store: Store, rtype: ResourceType) -> str:
    """Objects are shared by all versions; visit each storage once."""
    return sorted(t.version for t in store.registry.versions_of(rtype.group, rtype.plural))[0]
