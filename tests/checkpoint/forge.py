"""Forging delta manifests the way an attacker would: consistently, in a well-formed frame,
with the version ids recomputed, so only the checks under test can refuse them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltaroll.checkpoint.digests import version_id
from deltaroll.checkpoint.manifest import MANIFEST_NAME, decode_document, encode_document
from deltaroll.checkpoint.manifest_tensors import checked_digests, spread_digests


def rewrite_manifest(delta: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit a delta directory's manifest document in place."""
    path = delta / MANIFEST_NAME
    document = decode_document(path.read_bytes(), str(path))
    edit(document)
    path.write_bytes(encode_document(document))


def reseal_versions(document: dict[str, Any]) -> None:
    """Recompute both version ids from the (edited) columns and layouts."""
    tensors = document["tensors"]
    for side in ("base", "target"):
        if document[f"{side}_layout"] is None:
            continue
        columns = tensors[side]
        present = [dtype is not None for dtype in columns["dtype"]]
        raw = checked_digests(columns["digests"], sum(present), "digests")
        digests = spread_digests(raw, present)
        identities = [
            (name, dtype, shape, digest)
            for name, dtype, shape, digest in zip(
                tensors["name"], columns["dtype"], columns["shape"], digests, strict=True
            )
            if digest is not None
        ]
        aux = [(a["name"], a["digest"]) for a in document[f"{side}_layout"]["aux_files"]]
        document[f"{side}_version"] = version_id(identities, aux)
