"""``push``: turn a checkpoint on disk into a published version (a delta, an anchor, or both)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from deltaroll.checkpoint import diff_checkpoints, read_delta_manifest
from deltaroll.checkpoint.aux_policy import DEFAULT_AUX_POLICY, AuxPolicy
from deltaroll.store.aliases import check_name_free, set_name
from deltaroll.store.backends import ProgressCallback
from deltaroll.store.catalog import Catalog
from deltaroll.store.errors import BaseRequiredError
from deltaroll.store.names import validate_name
from deltaroll.store.publish import publish_anchor, publish_delta


@dataclass(frozen=True)
class PushResult:
    version: str
    parent: str | None
    uploaded_bytes: int
    published: bool  # False: the version was already in the store
    anchored: bool
    name: str | None


def push(
    catalog: Catalog,
    model: str,
    checkpoint: Path,
    *,
    base: Path | None = None,
    anchor: bool = False,
    name: str | None = None,
    force_name: bool = False,
    work_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    aux_policy: AuxPolicy = DEFAULT_AUX_POLICY,
) -> PushResult:
    """Diff ``checkpoint`` against ``base`` (and/or snapshot it) and publish the result.

    The first version of a model becomes an anchor on its own; after that, a push needs either
    the base it was trained from (``base``) or an explicit ``anchor``, so that a forgotten
    ``--base`` does not silently upload a full copy."""
    validate_name(model, what="model")
    if name is not None:
        validate_name(name, what="name")
    if base is None and not anchor and catalog.version_ids(model):
        raise BaseRequiredError(
            f"{catalog.backend.uri}: {model!r} already has versions; pass --base "
            "BASE_CHECKPOINT (the published checkpoint this one was trained from) to push a "
            "delta, or --anchor to push a full snapshot"
        )
    with tempfile.TemporaryDirectory(prefix="deltaroll-push-", dir=work_dir) as tmp:
        delta_dir, anchor_dir = Path(tmp) / "delta", Path(tmp) / "anchor"
        if base is not None:
            diff_checkpoints(Path(base), Path(checkpoint), delta_dir)
        if base is None or anchor:
            diff_checkpoints(None, Path(checkpoint), anchor_dir)
        if name is not None and not force_name:
            # Refuse a conflicting name before anything is uploaded, not after.
            version = read_delta_manifest(delta_dir if base is not None else anchor_dir)
            check_name_free(catalog, model, name, version.target_version)
        uploaded = 0
        outcome = None
        if base is not None:
            outcome = publish_delta(
                catalog, model, delta_dir, progress=progress, aux_policy=aux_policy
            )
            uploaded += outcome.uploaded_bytes
        if base is None or anchor:
            snapshot = publish_anchor(
                catalog, model, anchor_dir, progress=progress, aux_policy=aux_policy
            )
            uploaded += snapshot.uploaded_bytes
            outcome = outcome or snapshot
    assert outcome is not None  # one of the two branches above always runs
    if name is not None:
        set_name(catalog, model, name, outcome.version, force=force_name)
    return PushResult(
        version=outcome.version,
        parent=outcome.parent,
        uploaded_bytes=uploaded,
        published=outcome.published,
        anchored=base is None or anchor,
        name=name,
    )
