"""The ``/openapi/v3`` documents kubectl reads before it writes anything.

kubectl (client-go) asks the per group-version document whether a kind's PATCH operation takes
the ``fieldValidation`` query parameter; when it does, kubectl leaves validation to the server
(which prunes and validates custom objects against their CRD schema) instead of failing its
client-side validation for lack of a schema. Custom kinds also get their CRD schema under
``components.schemas`` (for ``kubectl explain`` and apply's merge logic); builtin kinds get none,
so kubectl falls back to its compiled-in types for strategic merge patches.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from deltaroll_sandbox.apiserver.resources import ResourceRegistry, ResourceType


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _group_versions(registry: ResourceRegistry) -> dict[str, list[ResourceType]]:
    result: dict[str, list[ResourceType]] = {}
    for rtype in registry:
        result.setdefault(_gv_path(rtype.group, rtype.version), []).append(rtype)
    return result


def index(registry: ResourceRegistry) -> dict[str, Any]:
    """``GET /openapi/v3``: where each group-version's document lives."""
    paths = {}
    for gv, rtypes in sorted(_group_versions(registry).items()):
        digest = (
            hashlib.sha256(
                json.dumps([(t.plural, t.kind, t.schema) for t in rtypes], sort_keys=True).encode()
            )
            .hexdigest()[:16]
            .upper()
        )
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}


def _schema_name(rtype: ResourceType) -> str:
    reversed_group = (
        ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    )
    return f"{reversed_group}.{rtype.version}.{rtype.kind}"


def document(registry: ResourceRegistry, gv: str) -> dict[str, Any] | None:
    """``GET /openapi/v3/<gv>``: PATCH operations with ``fieldValidation``, CRD schemas."""
    rtypes = _group_versions(registry).get(gv)
    if rtypes is None:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rtype in rtypes:
        gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
        scope = "namespaces/{namespace}/" if rtype.namespaced else ""
        parameters = [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        operation = {
            "operationId": f"patch{rtype.kind}",
            "parameters": parameters,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        }
        paths[f"/{gv}/{scope}{rtype.plural}/{{name}}"] = {"patch": operation}
        if rtype.schema is not None:
            schema = dict(rtype.schema)
            schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[_schema_name(rtype)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Deltaroll sandbox", "version": "v1.36.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
