"""The PodSecurity admission plugin: a namespace's ``pod-security.kubernetes.io/enforce`` label
(and ``enforce-version``) decides what its pods may be, as in kube-apiserver.

- A pod created in, or significantly changed in (its containers or their images), a namespace
  whose enforced level it breaks is refused with 403 and kube-apiserver's message. Pods made by
  the sandbox's Job and Deployment controllers go through the same door, so their controllers
  see the refusal (a ``FailedCreate`` Event), as on a cluster.
- A namespace with a label value that is not a level or a version is refused (422); pods in a
  namespace whose labels are broken anyway are held to ``restricted:latest`` (fail closed).
- Without labels the level is ``privileged``: namespaces that say nothing are unaffected.
  ``warn`` and ``audit`` are accepted but not acted on (the sandbox has no warnings or audit log).
"""

from __future__ import annotations

import re
from typing import Any, Final

from deltaroll_sandbox.apiserver.pod_security.standards import (
    LEVELS,
    PRIVILEGED,
    RESTRICTED,
    LevelVersion,
    describe,
    evaluate,
)
from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.statuses import forbidden, invalid
from deltaroll_sandbox.apiserver.store import PODS, Obj, Store, WatchEvent

NAMESPACES: Final = ("", "namespaces")
LABEL_PREFIX: Final = "pod-security.kubernetes.io/"
ENFORCE: Final = LABEL_PREFIX + "enforce"
ENFORCE_VERSION: Final = LABEL_PREFIX + "enforce-version"
_MODES: Final = ("enforce", "audit", "warn")
_VERSION: Final = re.compile(r"^v1\.([0-9]|[1-9][0-9]*)$")


def label_problems(labels: dict[str, Any]) -> list[tuple[str, str]]:
    """Field errors of the Pod Security labels, as kube-apiserver words them."""
    problems = []
    for mode in _MODES:
        key = LABEL_PREFIX + mode
        if key in labels and labels[key] not in LEVELS:
            problems.append(
                (
                    f"metadata.labels[{key}]",
                    f'Invalid value: "{labels[key]}": must be one of {", ".join(LEVELS)}',
                )
            )
        key = f"{key}-version"
        if key in labels and labels[key] != "latest" and not _VERSION.match(str(labels[key])):
            problems.append(
                (
                    f"metadata.labels[{key}]",
                    f'Invalid value: "{labels[key]}": must be "latest" or "v1.x"',
                )
            )
    return problems


def enforced(labels: dict[str, Any]) -> LevelVersion:
    """The enforced level and version; an unparsable value reads as restricted / latest."""
    level = labels.get(ENFORCE, PRIVILEGED)
    version = str(labels.get(ENFORCE_VERSION, "latest"))
    matched = _VERSION.match(version)
    return LevelVersion(
        level if level in LEVELS else RESTRICTED, int(matched.group(1)) if matched else None
    )


def significant_update(pod: Obj, old: Obj) -> bool:
    """Only a change of containers or their images is judged again (isSignificantPodUpdate)."""

    def images(spec: Obj, field: str) -> list[Any]:
        return [c.get("image") for c in spec.get(field) or []]

    spec, old_spec = pod.get("spec") or {}, old.get("spec") or {}
    if any(
        images(spec, field) != images(old_spec, field) for field in ("containers", "initContainers")
    ):
        return True
    before = {c.get("name"): c.get("image") for c in old_spec.get("ephemeralContainers") or []}
    return any(
        c.get("name") not in before or before[c.get("name")] != c.get("image")
        for c in spec.get("ephemeralContainers") or []
    )


class PodSecurityAdmission:
    """Validates after every defaulting admission, as the built-in plugin does."""

    def admit(self, store: Store, rtype: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rtype.storage_key == NAMESPACES:
            self._check_labels(rtype, obj, old)
        elif rtype.storage_key == PODS and (old is None or significant_update(obj, old)):
            self._check_pod(store, obj)

    @staticmethod
    def _check_labels(rtype: ResourceType, obj: Obj, old: Obj | None) -> None:
        problems = label_problems(obj["metadata"].get("labels") or {})
        if not problems:
            return
        if old is not None and label_problems(old["metadata"].get("labels") or {}) == problems:
            return  # already broken the same way: an unrelated update goes through
        raise invalid(rtype.kind, obj["metadata"]["name"], problems, rtype.group)

    @staticmethod
    def _check_pod(store: Store, pod: Obj) -> None:
        meta = pod["metadata"]
        namespaces = store.registry.lookup("", "v1", "namespaces")
        namespace = store.find(namespaces, "", meta["namespace"]) if namespaces else None
        policy = enforced(((namespace or {}).get("metadata") or {}).get("labels") or {})
        failures = evaluate(policy, meta, pod.get("spec") or {})
        if failures:
            reason = f'violates PodSecurity "{policy}": {describe(failures)}'
            raise forbidden("pods", meta.get("name", ""), reason)

    def written(self, store: Store, rtype: ResourceType, event: WatchEvent) -> None:
        return None
