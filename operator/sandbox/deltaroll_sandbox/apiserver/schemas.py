"""What kube-apiserver does with a CRD's ``openAPIV3Schema`` on every write of a custom object:
prune unknown fields, apply defaults, validate (types, enums, bounds, required, CEL rules in
``x-kubernetes-validations``), and answer 422 with field paths such as ``spec.replicas``.

Validation uses ``jsonschema`` (Draft 4, which is what OpenAPI v3.0 schemas are close to) on a
translated copy of the schema (``nullable`` and ``x-kubernetes-int-or-string`` become plain
JSON-schema); CEL rules run in :mod:`.cel`.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from deltaroll_sandbox.apiserver import cel

Schema = dict[str, Any]
_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def prune(value: Any, schema: Schema | None, path: str = "", root: bool = False) -> list[str]:
    """Drop fields the schema does not know, in place; returns their paths."""
    dropped: list[str] = []
    if schema is None:
        return dropped
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key in list(value):
            sub_path = f"{path}.{key}" if path else key
            if embedded and key in _ROOT_KEEP:
                continue  # apiVersion, kind and metadata are the server's, never pruned
            if props is not None and key in props:
                dropped += prune(value[key], props[key], sub_path)
            elif isinstance(additional, dict):
                dropped += prune(value[key], additional, sub_path)
            elif preserve or additional is True:
                continue
            else:
                del value[key]
                dropped.append(sub_path)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            dropped += prune(item, schema["items"], f"{path}[{index}]")
    return dropped


def apply_defaults(value: Any, schema: Schema | None) -> None:
    """Fill ``default`` values in place, only inside objects that exist (as the server does)."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        if isinstance(schema.get("additionalProperties"), dict):
            for key in value:
                apply_defaults(value[key], schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])


def _as_json_schema(schema: Any) -> Any:
    """Translate the OpenAPI v3 dialect into plain JSON-schema for the validator."""
    if isinstance(schema, list):
        return [_as_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {
        key: _as_json_schema(value)
        for key, value in schema.items()
        if key not in ("nullable", "default", "x-kubernetes-validations", "format")
    }
    if schema.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in result:
        result["type"] = [result["type"], "null"]
    return result


def _path_text(base: list[Any], extra: str = "") -> str:
    text = ""
    for part in base:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if extra:
        text = f"{text}.{extra}" if text else extra
    return text


def validate(
    value: dict[str, Any], schema: Schema, old: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """All problems as (field path, message), empty when the object is valid."""
    body = {k: v for k, v in value.items() if k != "metadata"}
    checked_schema = dict(schema)
    checked_schema["properties"] = {
        k: v for k, v in (schema.get("properties") or {}).items() if k != "metadata"
    }
    validator = jsonschema.Draft4Validator(_as_json_schema(checked_schema))
    problems: list[tuple[str, str]] = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            problems.append((_path_text(path, missing), "Required value"))
        else:
            where = _path_text(path)
            problems.append(
                (
                    where,
                    f"Invalid value: {_short(error.instance)}: "
                    f"{where or '<root>'} in body {_reason(error)}",
                )
            )
    if not problems:
        try:
            cel.check_values({"self": body, "oldSelf": old})
        except cel.CelError as exc:
            return [("", f"Invalid value: {exc}")]
        problems += _check_cel(body, checked_schema, old, [])
    return problems


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) < 80 else text[:77] + "..."


def _reason(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    match error.validator:
        case "type":
            return f"must be of type {schema.get('type')}"
        case "enum":
            return "should be one of " + ", ".join(f'"{v}"' for v in schema.get("enum", []))
        case "minimum":
            return f"should be greater than or equal to {schema.get('minimum')}"
        case "maximum":
            return f"should be less than or equal to {schema.get('maximum')}"
        case "pattern":
            return f"should match '{schema.get('pattern')}'"
        case "maxLength":
            return f"may not be longer than {schema.get('maxLength')}"
        case "minLength":
            return f"should be at least {schema.get('minLength')} chars long"
        case "maxItems":
            return f"must have at most {schema.get('maxItems')} items"
        case "minItems":
            return f"should have at least {schema.get('minItems')} items"
        case _:
            return error.message


def _check_cel(value: Any, schema: Schema, old: Any, path: list[Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue  # transition rules only run on updates
        context = {"self": value, **({"oldSelf": old} if uses_old else {})}
        try:
            ok = cel.evaluate(rule["rule"], context)
            message = rule.get("message") or f"failed rule: {rule['rule']}"
        except Exception as exc:  # a CEL runtime error fails the rule, as on a real server
            ok, message = False, f"failed rule: {rule['rule']}: {exc}"
        if not ok:
            field_path = _path_text(path, str(rule.get("fieldPath", "")).lstrip("."))
            problems.append((field_path, f"Invalid value: {message}"))
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                old_sub = old.get(key) if isinstance(old, dict) else None
                problems += _check_cel(value[key], sub, old_sub, [*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += _check_cel(item, schema["items"], None, [*path, index])
    return problems
