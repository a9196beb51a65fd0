"""Check an object against a generated CRD as the API server would: schema, then CEL rules.

The schema check is strict (unknown fields are errors, as `kubectl apply` reports them with its
default strict field validation). CEL rules are evaluated with cel-python; the Kubernetes list
library function ``isSorted`` that our rules use is provided here with Kubernetes' semantics.
Transition rules (those naming ``oldSelf``) run only when an old object is given, as on update.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "ModelDelta": REPO / "crds" / "modeldeltas.yaml",
    "ModelDeployment": REPO / "crds" / "modeldeployments.yaml",
}


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    items = list(values)
    return celtypes.BoolType(all(a <= b for a, b in zip(items, items[1:], strict=False)))


CEL_FUNCTIONS = {"isSorted": _is_sorted}


@cache
def load_crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load(CRD_FILES[kind].read_text())


def openapi_schema(kind: str) -> dict[str, Any]:
    return load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy in which objects with declared properties refuse unknown ones."""
    schema = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        if "properties" in node:
            node.setdefault("additionalProperties", False)
            for child in node["properties"].values():
                walk(child)
        if isinstance(node.get("items"), dict):
            walk(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"])

    walk(schema)
    # metadata is the API server's business, not the CRD's.
    schema["properties"]["metadata"]["additionalProperties"] = True
    return schema


@cache
def compile_rule(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=CEL_FUNCTIONS)


def schema_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(strict(openapi_schema(kind)))
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


def cel_errors(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    errors: list[str] = []
    _walk_cel(openapi_schema(kind), obj, old, "", errors)
    return errors


def _walk_cel(schema: dict[str, Any], value: Any, old: Any, path: str, errors: list[str]) -> None:
    for validation in schema.get("x-kubernetes-validations", []):
        rule = validation["rule"]
        if "oldSelf" in rule and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = compile_rule(rule).evaluate(activation)
        except celpy.CELEvalError as exc:
            errors.append(f"{path or '<root>'}: rule {rule!r} failed to evaluate: {exc}")
            continue
        if result != celtypes.BoolType(True):
            errors.append(f"{path or '<root>'}: {validation['message']}")
    if isinstance(value, dict):
        for key, child in value.items():
            child_schema = schema.get("properties", {}).get(key)
            if child_schema is None and isinstance(schema.get("additionalProperties"), dict):
                child_schema = schema["additionalProperties"]
            if child_schema is not None:
                old_child = old.get(key) if isinstance(old, dict) else None
                _walk_cel(child_schema, child, old_child, f"{path}.{key}", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        # Kubernetes correlates old list items only for map lists; our transition rules
        # live on scalars and objects, so items are checked without oldSelf.
        for index, child in enumerate(value):
            _walk_cel(schema["items"], child, None, f"{path}[{index}]", errors)


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, as the API server does."""
    if isinstance(value, dict):
        result = {}
        properties = schema.get("properties", {})
        for key, child_schema in properties.items():
            if key not in value and "default" in child_schema:
                result[key] = copy.deepcopy(child_schema["default"])
        for key, child in value.items():
            child_schema = properties.get(key)
            if child_schema is None and isinstance(schema.get("additionalProperties"), dict):
                child_schema = schema["additionalProperties"]
            result[key] = with_defaults(child_schema, child) if child_schema else child
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], item) for item in value]
    return value


def all_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """What the API server would answer: defaults applied, then the schema, then CEL rules."""
    kind = obj["kind"]
    schema = openapi_schema(kind)
    obj = with_defaults(schema, obj)
    old = with_defaults(schema, old) if old is not None else None
    errors = schema_errors(kind, obj)
    return errors or cel_errors(kind, obj, old)


def all_validations(node: dict[str, Any]) -> list[dict[str, str]]:
    """Every x-kubernetes-validations entry (rule, message) in a schema."""
    found = list(node.get("x-kubernetes-validations", []))
    for child in node.get("properties", {}).values():
        found += all_validations(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += all_validations(node[key])
    return found


def all_rules(node: dict[str, Any]) -> list[str]:
    """Every CEL rule in a schema."""
    return [validation["rule"] for validation in all_validations(node)]
