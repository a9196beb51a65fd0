"""Where things live in a store, relative to the store URI. The only module that builds keys.

<model>/versions/<version>.json   a published version (written last, conditionally)
<model>/objects/<sha256>          immutable payloads, deduplicated across versions
<model>/anchors/<version>.json    full snapshots (a delta from nothing)
<model>/names/<name>.json         human names (``step-120``) pointing at a version id
<model>/signatures/<version>/<key id>.json
                                  a publisher key's signature of a version (one per key)
<model>/staging/<group>/part-<index>-of-<shares>.json
                                  one share of a sharded computation, until it is published
<model>/staging/<group>/job.json  which Job computes the group (gc keeps a group while it runs)
<model>/leases/<kind>-<id>.json   a gc or a publish in progress (see :mod:`.leases`)
"""

from __future__ import annotations

import re

from deltaroll.store.names import validate_digest, validate_name

_STAGED_PART = re.compile(r"([^/]+)/part-([0-9]{4})-of-([0-9]{4})\.json")


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


def signature_key(model: str, version: str, key_id: str) -> str:
    return f"{signatures_prefix(model, version)}{validate_digest(key_id)}.json"


def all_signatures_prefix(model: str) -> str:
    return f"{model_prefix(model)}signatures/"


def signatures_prefix(model: str, version: str) -> str:
    return f"{all_signatures_prefix(model)}{validate_name(version, what='version')}/"


def versions_prefix(model: str) -> str:
    return f"{model_prefix(model)}versions/"


def anchors_prefix(model: str) -> str:
    return f"{model_prefix(model)}anchors/"


def names_prefix(model: str) -> str:
    return f"{model_prefix(model)}names/"


def objects_prefix(model: str) -> str:
    return f"{model_prefix(model)}objects/"


def staging_prefix(model: str) -> str:
    return f"{model_prefix(model)}staging/"


def staging_part_key(model: str, group: str, index: int, shares: int) -> str:
    """Where index ``index`` of a ``shares``-way computation records its share; the share count
    is in the key so a listing tells whether a group is complete."""
    group = validate_name(group, what="staging group")
    return f"{staging_prefix(model)}{group}/part-{index:04d}-of-{shares:04d}.json"


def staging_job_key(model: str, group: str) -> str:
    group = validate_name(group, what="staging group")
    return f"{staging_prefix(model)}{group}/job.json"


def leases_prefix(model: str) -> str:
    return f"{model_prefix(model)}leases/"


def lease_key(model: str, kind: str, holder: str) -> str:
    return f"{leases_prefix(model)}{validate_name(kind, what='lease kind')}-{holder}.json"


def staging_part(key: str, prefix: str) -> tuple[str, int, int] | None:
    """``(group, index, shares)`` of a listed staging key, or None for a foreign key."""
    match = _STAGED_PART.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
    if match is None:
        return None
    group, index, shares = match.groups()
    return group, int(index), int(shares)


def stem(key: str, prefix: str, suffix: str = "") -> str | None:
    """The name between ``prefix`` and ``suffix`` of a listed key, or None for a foreign key."""
    if not key.startswith(prefix) or not key.endswith(suffix):
        return None
    middle = key[len(prefix) : len(key) - len(suffix)]
    return middle if middle and "/" not in middle else None
