"""Validation of labels and annotations, with kube-apiserver's rules and messages (operators
that write a bad label value get the same 422 here as on a cluster)."""

from __future__ import annotations

import json
import re
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_ANNOTATIONS_BYTES = 256 * 1024


def _key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        return f'Invalid value: "{key}": prefix part must be a lowercase RFC 1123 subdomain'
    if not name or len(name) > 63 or not _NAME.match(name):
        return (
            f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


def problems(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for every invalid label key or value and annotation key."""
    found: list[tuple[str, str]] = []
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    for field, mapping in (("metadata.labels", labels), ("metadata.annotations", annotations)):
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            found.append((field, "Invalid value: keys and values must be strings"))
            return found
        for key in mapping:
            if (problem := _key_problem(key)) is not None:
                found.append((field, problem))
    for key, value in labels.items():
        if value and (len(value) > 63 or not _NAME.match(value)):
            found.append(
                (
                    f"metadata.labels.{key}",
                    f'Invalid value: "{value}": a valid label must be an empty string or '
                    "consist of alphanumeric characters, '-', '_' or '.', and must start and "
                    "end with an alphanumeric character",
                )
            )
    if len(json.dumps(annotations)) > MAX_ANNOTATIONS_BYTES:
        found.append(("metadata.annotations", "Too long: must have at most 262144 bytes"))
    return found
