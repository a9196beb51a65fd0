"""Generate the CustomResourceDefinitions from the pydantic models.

Pydantic writes JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3
schema: every node typed, no ``$ref``, no ``anyOf``/``oneOf`` except the int-or-string form, no
``additionalProperties: false`` next to ``properties``. :func:`structural` converts one into the
other and refuses any keyword it does not know, so a new pydantic feature cannot slip an invalid
construct into a CRD unnoticed.

``Optional[X] = None`` becomes a non-required ``X`` without ``nullable``: the API server prunes an
explicit null of a non-nullable field, so absent and null mean the same, and CEL rules can rely on
``has()`` alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from deltaroll.api import modeldelta, modeldeployment
from deltaroll.api.common import GROUP, VERSION
from deltaroll.api.errors import CrdGenerationError

CATEGORY = "deltaroll"

# Keywords a structural schema may carry (and that we use).
_ALLOWED_KEYS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "default",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "x-kubernetes-validations",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "anyOf",
    }
)
_DROPPED_KEYS = frozenset({"title"})
_NULL = {"type": "null"}
_VALIDATIONS = "x-kubernetes-validations"


@dataclass(frozen=True)
class ResourceKind:
    """What a CRD needs beyond the schema: names and printer columns."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    printer_columns: tuple[dict[str, Any], ...]


def _column(
    name: str, type_: str, json_path: str, description: str, priority: int = 0
) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    column["description"] = description
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")

MODEL_DELTA = ResourceKind(
    kind=modeldelta.KIND,
    plural=modeldelta.PLURAL,
    short_names=("mdelta", "mdeltas"),
    spec_model=modeldelta.ModelDeltaSpec,
    status_model=modeldelta.ModelDeltaStatus,
    description=(
        "ModelDelta is one version of a model in a store: the diff of a target checkpoint "
        "against a parent version, computed by a Job (on a GPU when its resources ask for one), "
        "or a trainer's TRL sparse patch imported onto the parent. Without a parent it publishes "
        "an anchor, a full snapshot."
    ),
    printer_columns=(
        _column("Model", "string", ".spec.model", "Model name."),
        _column("Version", "string", ".status.version", "Version name published."),
        _column("Parent", "string", ".spec.parent", "Parent version; empty for an anchor."),
        _column("Phase", "string", ".status.phase", "Pending, Computing, Ready or Failed."),
        _column("Changed", "string", ".status.changedPercent", "Elements changed, in percent."),
        _column("Delta-Bytes", "integer", ".status.deltaBytes", "Bytes of the delta."),
        _column("Version-ID", "string", ".status.versionId", "Content-derived id.", priority=1),
        _column("Full-Bytes", "integer", ".status.fullBytes", "Full checkpoint bytes.", 1),
        _column("Job", "string", ".status.jobRef.name", "The Job doing the work.", priority=1),
        _AGE,
    ),
)

MODEL_DEPLOYMENT = ResourceKind(
    kind=modeldeployment.KIND,
    plural=modeldeployment.PLURAL,
    short_names=("mdeploy", "mdeploys"),
    spec_model=modeldeployment.ModelDeploymentSpec,
    status_model=modeldeployment.ModelDeploymentStatus,
    description=(
        "ModelDeployment says which version a set of inference pods (chosen by a label selector) "
        "serves and how to get there: Argo-Rollouts-style canary steps (setWeight, pause, "
        "analysis), metric templates, automatic rollback. GitOps promotes by changing "
        "spec.version; promote, abort and retry are annotations (deltaroll.dev/promote, "
        "deltaroll.dev/abort, deltaroll.dev/retry) set by `kubectl deltaroll`."
    ),
    printer_columns=(
        _column("Model", "string", ".spec.model", "Model name."),
        _column("Desired", "string", ".spec.version", "Version the pods should serve."),
        _column("Stable", "string", ".status.stableVersion", "Last fully promoted version."),
        _column("Canary", "string", ".status.canaryVersion", "Version being rolled out."),
        _column("Step", "integer", ".status.currentStepIndex", "Canary step in progress."),
        _column("Ready", "integer", ".status.readyPods", "Pods Ready."),
        _column("Updated", "integer", ".status.updatedPods", "Pods on the canary version."),
        _column("Total", "integer", ".status.totalPods", "Selected pods."),
        _column("Phase", "string", ".status.phase", "Healthy, Progressing, Paused, Degraded."),
        _column("Message", "string", ".status.message", "Summary.", priority=1),
        _AGE,
    ),
)

KINDS: tuple[ResourceKind, ...] = (MODEL_DELTA, MODEL_DEPLOYMENT)


def _merge(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """``inner`` (the referenced or non-null schema) with ``outer``'s annotations on top."""
    merged = {**inner, **{k: v for k, v in outer.items() if k not in ("$ref", "anyOf")}}
    rules = inner.get(_VALIDATIONS, []) + outer.get(_VALIDATIONS, [])
    if rules:
        merged[_VALIDATIONS] = rules
    return merged


def structural(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Convert one pydantic JSON-schema node (and everything below it) to structural form."""
    node = copy.deepcopy(node)
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = _merge(node, defs[name])
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b != _NULL]
        if len(branches) != 1:
            raise CrdGenerationError(
                f"{path or '<root>'}: a union of several types has no structural form; "
                "model it as an object with one optional field per alternative and a CEL rule"
            )
        node = _merge(node, branches[0])
        if node.get("default", ...) is None:
            del node["default"]
        if "$ref" in node:
            return structural(node, defs, path)
    for key in _DROPPED_KEYS:
        node.pop(key, None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if "const" in node:
        node["enum"] = [node.pop("const")]
    unknown = set(node) - _ALLOWED_KEYS
    if unknown:
        raise CrdGenerationError(f"{path or '<root>'}: no structural form for {sorted(unknown)}")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise CrdGenerationError(
            f"{path or '<root>'}: every node of a structural schema needs a type"
        )
    if "properties" in node:
        node["properties"] = {
            key: structural(value, defs, f"{path}.{key}")
            for key, value in node["properties"].items()
        }
    if isinstance(node.get("items"), dict):
        node["items"] = structural(node["items"], defs, f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = structural(node["additionalProperties"], defs, f"{path}.*")
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def openapi_schema(resource: ResourceKind) -> dict[str, Any]:
    """The whole object's openAPIV3Schema: apiVersion, kind, metadata, spec, status."""
    return {
        "type": "object",
        "description": " ".join(resource.description.split()),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": (
                    "APIVersion defines the versioned schema of this representation of an object."
                ),
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource.",
            },
            "metadata": {"type": "object", "description": "Standard object metadata."},
            "spec": model_schema(resource.spec_model),
            "status": model_schema(resource.status_model),
        },
    }


def crd(resource: ResourceKind) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource.plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "deltaroll",
                "app.kubernetes.io/part-of": "deltaroll",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in resource.printer_columns],
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


HEADER = (
    "# Generated by `deltaroll crds -o crds/` from operator/deltaroll/api. Do not edit by hand:\n"
    "# change the pydantic models and run `make crds`.\n"
)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared sub-trees out in full: anchors and aliases would puzzle readers and tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml(resource: ResourceKind) -> str:
    """The CRD as the YAML file committed under crds/ (deterministic, byte for byte)."""
    body = yaml.dump(
        crd(resource), Dumper=_NoAliasDumper, sort_keys=True, width=100, allow_unicode=True
    )
    return HEADER + "---\n" + body


def crd_files() -> dict[str, str]:
    """File name -> content of every CRD, e.g. ``modeldeltas.yaml``."""
    return {f"{resource.plural}.yaml": crd_yaml(resource) for resource in KINDS}
