"""Turn an object from the API server (or a manifest) into a typed model, or a named error;
read a list response's objects, and any field of an object, as JSON.

Controllers call :func:`parse_resource` on every body Kopf hands them. The API server has already
applied the CRD's schema and CEL rules, but a body can still be wrong (a sandbox without CEL, an
object stored under an older CRD); the error then names the object and every bad field, so the
user can fix the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from deltaroll.api.errors import InvalidResourceError
from deltaroll.api.modeldelta import ModelDelta
from deltaroll.api.modeldeployment import ModelDeployment

MODELS: dict[str, type[ModelDelta] | type[ModelDeployment]] = {
    "ModelDelta": ModelDelta,
    "ModelDeployment": ModelDeployment,
}


def _describe(error: Any) -> str:
    path = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def parse_resource(body: Mapping[str, Any]) -> ModelDelta | ModelDeployment:
    """The typed ModelDelta or ModelDeployment; :class:`InvalidResourceError` when it is not."""
    kind = body.get("kind")
    model = MODELS.get(str(kind))
    if model is None:
        raise InvalidResourceError(
            f"kind {kind!r} is not a Deltaroll resource; expected one of {sorted(MODELS)}"
        )
    metadata = body.get("metadata") or {}
    name = f"{metadata.get('namespace', '')}/{metadata.get('name', '?')}".lstrip("/")
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise InvalidResourceError(
            f"{kind} {name} is invalid: {problems}. Fix the manifest; "
            f"`kubectl explain {str(kind).lower()}.spec` documents every field"
        ) from None


def list_items(raw: bytes | str) -> list[dict[str, Any]]:
    """The objects of a list response (``{"items": [...]}``, read with the client's
    ``_preload_content=False``), each an object with a string ``metadata.name``; ValueError when
    it is not that (invalid JSON included). JSON, not the client's models: for 64 pods, building
    V1Pods was half of an agent's and of the operator's CPU per version."""
    listed = json.loads(raw)
    items = listed.get("items") if isinstance(listed, dict) else None
    if not isinstance(items, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get("metadata"), dict)
        and isinstance(item["metadata"].get("name"), str)
        for item in items
    ):
        raise ValueError("the list response is not a list of named objects")
    return items


def json_object(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one: a field of an API object read
    as JSON is checked like any input from outside."""
    return value if isinstance(value, dict) else {}
