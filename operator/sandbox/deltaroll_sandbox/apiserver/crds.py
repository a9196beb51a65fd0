"""CustomResourceDefinitions: creating one serves its resource; its schema guards every write.

As on a real server, a CRD becomes ``Established`` at once, each served version appears in
discovery (``/apis/<group>/<version>``), and custom objects are pruned, defaulted and validated
against the version's ``openAPIV3Schema`` (422 with field paths). Deleting the CRD deletes its
objects. Versions share one storage (no conversion webhooks: the ``None`` strategy).
"""

from __future__ import annotations

from typing import Any

from deltaroll_sandbox.apiserver import schemas
from deltaroll_sandbox.apiserver.resources import ResourceType
from deltaroll_sandbox.apiserver.statuses import bad_request, invalid
from deltaroll_sandbox.apiserver.store import Obj, Store, WatchEvent, field_validation, now_rfc3339

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


def resource_types(crd: Obj) -> list[ResourceType]:
    """The resources a CRD serves, one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = set((version.get("subresources") or {}).keys())
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                subresources=frozenset(subresources),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                custom=True,
            )
        )
    return result


def _check_crd(crd: Obj) -> None:
    name = crd.get("metadata", {}).get("name", "")
    spec = crd.get("spec")
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        raise invalid("CustomResourceDefinition", name, [("spec", "Required value")], CRD_KEY[0])
    names = spec.get("names") or {}
    for field in ("plural", "kind"):
        if not names.get(field):
            problems.append((f"spec.names.{field}", "Required value"))
    if not spec.get("group"):
        problems.append(("spec.group", "Required value"))
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        problems.append(
            ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
        )
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        problems.append(
            (
                "spec.versions",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    for index, version in enumerate(versions):
        if not ((version.get("schema") or {}).get("openAPIV3Schema")):
            problems.append(
                (
                    f"spec.versions[{index}].schema.openAPIV3Schema",
                    "Required value: schemas are required",
                )
            )
    if spec.get("scope", "Namespaced") not in ("Namespaced", "Cluster"):
        problems.append(("spec.scope", 'Unsupported value: use "Namespaced" or "Cluster"'))
    if problems:
        raise invalid("CustomResourceDefinition", name, problems, CRD_KEY[0])


class CustomResourceAdmission:
    """Registers CRDs' resources and applies their schemas to custom objects."""

    def admit(self, store: Store, rtype: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rtype.storage_key == CRD_KEY:
            _check_crd(obj)
            if old is not None and obj["spec"]["group"] != old["spec"]["group"]:
                raise invalid(
                    "CustomResourceDefinition",
                    obj["metadata"]["name"],
                    [("spec.group", "Invalid value: field is immutable")],
                    CRD_KEY[0],
                )
            return
        if not rtype.custom:
            return
        current = store.registry.lookup(rtype.group, rtype.version, rtype.plural)
        schema = current.schema if current is not None else rtype.schema
        if schema is None:
            return
        dropped = schemas.prune(obj, schema, root=True)
        if dropped and field_validation.get() == "Strict":
            raise bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: '
                + ", ".join(f'strict decoding error: unknown field "{path}"' for path in dropped)
            )
        schemas.apply_defaults(obj, schema)
        problems = schemas.validate(obj, schema, old)
        if problems:
            raise invalid(rtype.kind, obj["metadata"].get("name", ""), problems, rtype.group)

    def written(self, store: Store, rtype: ResourceType, event: WatchEvent) -> None:
        if rtype.storage_key != CRD_KEY:
            return
        crd = event.obj
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        if event.type == "DELETED":
            for served in store.registry.versions_of(group, plural):
                for obj in store.list_objects(served):
                    store.purge(
                        served, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                    )
                break
            store.registry.unregister(group, plural)
            return
        store.registry.unregister(group, plural)
        for served in resource_types(crd):
            store.registry.register(served)
        if not (crd.get("status") or {}).get("conditions"):
            store.mutate(rtype, "", crd["metadata"]["name"], _established, subresource="status")


def _established(crd: Obj) -> None:
    now = now_rfc3339()
    names = crd["spec"]["names"]
    accepted: dict[str, Any] = {
        "plural": names["plural"],
        "kind": names["kind"],
        "singular": names.get("singular") or names["kind"].lower(),
        "listKind": names.get("listKind") or f"{names['kind']}List",
    }
    for optional in ("shortNames", "categories"):
        if names.get(optional):
            accepted[optional] = names[optional]
    crd["status"] = {
        "acceptedNames": accepted,
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
    }
