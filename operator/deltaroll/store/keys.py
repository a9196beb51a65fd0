"""Where things live in a store, relative to the store URI. The only module that builds keys.

<model>/versions/<version>.json   a published version (written last, conditionally)
<model>/objects/<sha256>          immutable payloads, deduplicated across versions
<model>/anchors/<version>.json    full snapshots (a delta from nothing)
<model>/names/<name>.json         human names (``step-120``) pointing at a version id
"""

from __future__ import annotations

from deltaroll.store.names import validate_digest, validate_name


def model_prefix(model: str) -> str:
    return validate_name(model, what="model") + "/"


def version_key(model: str, version: str) -> str:
    return f"{model_prefix(model)}versions/{validate_name(version, what='version')}.json"


def anchor_key(model: str, version: str) -> str:
    return f"{model_prefix(model)}anchors/{validate_name(version, what='version')}.json"


def name_key(model: str, name: str) -> str:
    return f"{model_prefix(model)}names/{validate_name(name, what='name')}.json"


def object_key(model: str, digest: str) -> str:
    return f"{model_prefix(model)}objects/{validate_digest(digest)}"


def versions_prefix(model: str) -> str:
    return f"{model_prefix(model)}versions/"


def anchors_prefix(model: str) -> str:
    return f"{model_prefix(model)}anchors/"


def names_prefix(model: str) -> str:
    return f"{model_prefix(model)}names/"


def objects_prefix(model: str) -> str:
    return f"{model_prefix(model)}objects/"


def stem(key: str, prefix: str, suffix: str = "") -> str | None:
    """The name between ``prefix`` and ``suffix`` of a listed key, or None for a foreign key."""
    if not key.startswith(prefix) or not key.endswith(suffix):
        return None
    middle = key[len(prefix) : len(key) - len(suffix)]
    return middle if middle and "/" not in middle else None
