"""Server-side printing: ``meta.k8s.io/v1`` Tables, what ``kubectl get`` asks for.

Pods show READY/STATUS/RESTARTS as kube-apiserver prints them (:mod:`.pod_row`), Jobs
STATUS/COMPLETIONS, Deployments READY/UP-TO-DATE/AVAILABLE, custom kinds their CRD's
``additionalPrinterColumns``; everything else NAME and AGE.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonpath_ng.ext

from deltaroll_sandbox.apiserver.ages import age
from deltaroll_sandbox.apiserver.pod_row import pod_cells
from deltaroll_sandbox.apiserver.resources import ResourceType

Column = tuple[str, str, int]  # name, type, priority


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _pod_row(pod: dict[str, Any]) -> list[Any]:
    node = pod["spec"].get("nodeName") or "<none>"
    ip = (pod.get("status") or {}).get("podIP") or "<none>"
    return [*pod_cells(pod), ip, node]


def _job_row(job: dict[str, Any]) -> list[Any]:
    status = job.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    state = (
        "Complete"
        if conditions.get("Complete") == "True"
        else "Failed"
        if conditions.get("Failed") == "True"
        else "Running"
    )
    return [state, f"{status.get('succeeded', 0)}/{job['spec'].get('completions', 1)}"]


def _deployment_row(deployment: dict[str, Any]) -> list[Any]:
    status = deployment.get("status") or {}
    return [
        f"{status.get('readyReplicas', 0)}/{deployment['spec'].get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
    ]


_BUILTIN: dict[tuple[str, str], tuple[list[Column], Any]] = {
    ("", "pods"): (
        [
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        _pod_row,
    ),
    ("batch", "jobs"): ([("Status", "string", 0), ("Completions", "string", 0)], _job_row),
    ("apps", "deployments"): (
        [("Ready", "string", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0)],
        _deployment_row,
    ),
    ("", "nodes"): (
        [("Status", "string", 0)],
        lambda node: [
            "Ready"
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (node.get("status") or {}).get("conditions") or []
            )
            else "NotReady"
        ],
    ),
    ("", "events"): (
        [
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        lambda event: [
            event.get("type", ""),
            event.get("reason", ""),
            f"{(event.get('involvedObject') or {}).get('kind', '').lower()}/"
            f"{(event.get('involvedObject') or {}).get('name', '')}",
            event.get("message", ""),
        ],
    ),
    ("", "namespaces"): (
        [("Status", "string", 0)],
        lambda ns: [(ns.get("status") or {}).get("phase", "")],
    ),
}


@functools.lru_cache(maxsize=256)
def _compiled(path: str) -> Any:
    return jsonpath_ng.ext.parse("$" + path)


def json_path(obj: Any, path: str) -> Any:
    """The first value at a printer column's JSONPath (``.a.b``, ``[0]``, ``[?(@.type=="X")]``)."""
    found = _compiled(path).find(obj)
    return found[0].value if found else None


def _custom_cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    value = json_path(obj, column["jsonPath"])
    if value is None:
        return None
    if column.get("type") == "date":
        return age(str(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def table(
    rtype: ResourceType, objects: list[dict[str, Any]], resource_version: int, include: str
) -> dict[str, Any]:
    custom = list(rtype.printer_columns)
    columns: list[Column]
    if rtype.storage_key in _BUILTIN:
        columns, row_fn = _BUILTIN[rtype.storage_key]
    elif custom:
        columns = [(c["name"], c.get("type", "string"), int(c.get("priority", 0))) for c in custom]

        def row_fn(obj: dict[str, Any]) -> list[Any]:
            return [_custom_cell(obj, c) for c in custom]
    else:
        columns, row_fn = [], lambda obj: []
    # A CRD's printer columns replace the default ones (AGE included), as on a cluster.
    has_age = bool(custom) or any(name.lower() == "age" for name, _, _ in columns)
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    definitions += [
        {"name": n, "type": t, "format": "", "description": n, "priority": p} for n, t, p in columns
    ]
    # AGE goes after the always-shown columns, before the -o wide ones (as kubectl prints pods).
    age_at = 1 + sum(1 for _, _, priority in columns if priority == 0)
    if not has_age:
        definitions.insert(
            age_at,
            {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0},
        )
    rows = []
    for obj in objects:
        cells = [obj["metadata"]["name"], *row_fn(obj)]
        if not has_age:
            cells.insert(age_at, age(obj["metadata"].get("creationTimestamp")))
        row: dict[str, Any] = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(resource_version)},
        "columnDefinitions": definitions,
        "rows": rows,
    }
